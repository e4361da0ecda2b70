"""The single-threaded twins used for small inputs give bit-identical results."""

import numpy as np
import pytest

import nnkernels
import nnkernels._jit as jit


@pytest.fixture
def threshold():
    previous = jit.PARALLEL_THRESHOLD

    def use(value):
        jit.PARALLEL_THRESHOLD = value

    yield use
    jit.PARALLEL_THRESHOLD = previous


def _run_everything(x4, x2):
    results = []
    results += list(nnkernels.relu_forward(x4))
    results.append(nnkernels.relu_backward(x4, x4 > 0.3))
    col = nnkernels.im2col(x4, 3, 2, 2, 1)
    results += [col, nnkernels.col2im(col, x4.shape, 3, 2, 2, 1)]
    cols = nnkernels.im2col_per_sample(x4, 2, 3, 1, 2)
    results += [cols, nnkernels.col2im_per_sample(cols, x4.shape, 2, 3, 1, 2)]
    out, argmax = nnkernels.maxpool_forward(x4, 3, 3, 2, 1)
    results += [out, argmax, nnkernels.maxpool_backward(out, argmax, x4.shape, 3, 3, 2, 1)]
    for x in (x2, x4):
        n_stats = x.shape[1]
        gamma = np.linspace(0.5, 1.5, n_stats).astype(x.dtype)
        beta = np.linspace(-1, 1, n_stats).astype(x.dtype)
        fwd = nnkernels.batchnorm_forward(x, gamma, beta)
        results += list(fwd)
        results.append(nnkernels.batchnorm_inference(x, gamma, beta, fwd[2], fwd[3]))
        results += list(nnkernels.batchnorm_backward(x * 0.5 + 1, fwd[1], fwd[4], gamma))
        stats = nnkernels.batchnorm_forward(x, gamma, beta, return_xn=False, stats_dtype=np.float64)
        results += [stats[0]] + list(nnkernels.batchnorm_backward_from_input(
            x * 0.5 + 1, x, stats[2], stats[4], gamma))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_serial_and_parallel_kernels_agree_bitwise(threshold, dtype):
    rng = np.random.default_rng(7)
    x4 = rng.standard_normal((3, 5, 9, 7)).astype(dtype)
    x2 = rng.standard_normal((6, 700)).astype(dtype)
    threshold(0)
    parallel = _run_everything(x4, x2)
    threshold(1 << 62)
    serial = _run_everything(x4, x2)
    assert len(parallel) == len(serial) == 36
    for p, s in zip(parallel, serial):
        assert p.dtype == s.dtype and p.shape == s.shape
        np.testing.assert_array_equal(p, s)


def test_small_work_uses_the_serial_twin(threshold):
    kernel = nnkernels.activations._relu_forward_kernel
    threshold(100)
    assert kernel.sized(99) is kernel.serial and kernel.sized(100) is kernel
    with jit.forced_parallel():
        assert kernel.sized(1) is kernel
