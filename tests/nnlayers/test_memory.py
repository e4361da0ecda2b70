"""Memory of Convolution: never above the reference's peak; the workspace bound holds.

NumPy reports its allocations to ``tracemalloc``, so the peak of traced memory during a
forward+backward is the peak of array memory (deterministic, unlike timings).
"""

import tracemalloc

import numpy as np
import pytest

import nnkernels
import nnlayers
from conv_routes import convolution_route
from nnlayers import reference


def peak_bytes(fn):
    """Peak traced bytes of one ``fn()`` call above what was allocated before it.

    ``fn`` should build its layer itself, so that buffers a layer keeps are counted.
    """
    fn()  # warm up: JIT compilation is not what we measure
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def conv_step(module, x, W, b, dout, pad):
    def step():
        layer = module.Convolution(W, b, stride=1, pad=pad)
        layer.forward(x)
        layer.backward(dout)

    return step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_convolution_peak_is_not_above_the_reference(dtype, workspace_limit, conv_route):
    workspace_limit(None)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 20, 20)).astype(dtype)
    W = rng.standard_normal((12, 8, 3, 3)).astype(dtype)
    b = np.zeros(12, dtype)
    dout = rng.standard_normal((16, 12, 20, 20)).astype(dtype)
    ours = peak_bytes(conv_step(nnlayers, x, W, b, dout, 1))
    ref = peak_bytes(conv_step(reference, x, W, b, dout, 1))
    assert ours <= ref, (ours, ref)


def test_workspace_limit_bounds_the_column_memory(workspace_limit):
    # the matmul route keeps a batch's columns unless bounded; the kernels never hold them
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 8, 16, 16))
    W = rng.standard_normal((4, 8, 3, 3))
    dout = rng.standard_normal((32, 4, 16, 16))
    columns = 32 * 8 * 9 * 16 * 16 * 8  # the whole batch's column matrix, float64
    step = conv_step(nnlayers, x, W, 0.0, dout, 1)
    with convolution_route("matmul"):
        workspace_limit(None)
        unbounded = peak_bytes(step)
        workspace_limit(columns // 8)
        bounded = peak_bytes(step)
    assert unbounded >= columns
    # a fraction of the columns, plus the output, the input gradient and dout-sized terms
    assert bounded < unbounded - columns // 2, (bounded, unbounded)


@pytest.mark.skipif(not nnkernels.conv_kernels_available(), reason="no fused kernels here")
def test_the_fused_kernels_never_hold_a_batch_of_columns(workspace_limit):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 8, 16, 16))
    W = rng.standard_normal((4, 8, 3, 3))
    dout = rng.standard_normal((32, 4, 16, 16))
    columns = 32 * 8 * 9 * 16 * 16 * 8
    workspace_limit(None)
    with convolution_route("kernels"):
        peak = peak_bytes(conv_step(nnlayers, x, W, 0.0, dout, 1))
    # output, input gradient, per-sample dW and two sample-sized matrices per thread
    assert peak < columns // 2, (peak, columns)
