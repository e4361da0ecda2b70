"""Inputs for the example calls of the kernel table (:mod:`nnkernels._registry`).

Example inputs are made with NumPy only (never with the library's kernels), so building
one group's examples compiles nothing of another group. Shapes are small (compiling, not
running, is the cost) but big enough to be split over threads, and reach every path.
"""

import numpy as np

from ..registry import example

#: (N, C, H, W) of the image examples
IMAGE = (3, 5, 9, 7)
#: batch-norm inputs: (N, D) and (N, C, H, W) taking the one-launch kernels, then the few
#: features/channels over many elements that take the split path (its reductions); the
#: third fused input has enough channels to take the one-launch kernels at any threshold
BATCHNORM_FUSED = ((6, 1100), IMAGE, (2, 8, 5, 4))
BATCHNORM_SPLIT = ((400, 100), (4, 2, 80, 80))


def rand(shape, dtype, seed=0):
    """Reproducible standard-normal values of ``dtype``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def image(dtype, seed=0):
    return rand(IMAGE, dtype, seed)


def _bn_view(x):
    return x if x.ndim == 2 else x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def _bn_case(shape, dtype, seed):
    """``(x, gamma, beta, mean, var, std, xn, dout)`` with NumPy's statistics of ``x``."""
    x = rand(shape, dtype, seed)
    n_stats = shape[1]
    gamma = np.linspace(0.5, 1.5, n_stats).astype(dtype)
    beta = np.linspace(-1, 1, n_stats).astype(dtype)
    view = _bn_view(x.astype(np.float64))
    mean, var = view.mean(axis=0), view.var(axis=0)
    std = np.sqrt(var + 1e-6)
    shape4 = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    xn = ((x - mean.reshape(shape4)) / std.reshape(shape4)).astype(dtype)
    dout = (x * 0.5 + 1).astype(dtype)
    return x, gamma, beta, mean, var, std, xn, dout


def _batchnorm(build, dtype):
    calls = []
    for shapes in (BATCHNORM_FUSED, BATCHNORM_SPLIT):
        for seed, shape in enumerate(shapes):
            for call in build(*_bn_case(shape, dtype, seed)):
                calls.append(call)
    return calls


def batchnorm_forward(dtype):
    return _batchnorm(
        lambda x, gamma, beta, *_: [
            example(x, gamma, beta),
            example(x, gamma, beta, return_xn=False, stats_dtype=np.float64),
        ],
        dtype,
    )


def batchnorm_inference(dtype):
    return _batchnorm(
        lambda x, gamma, beta, mean, var, *_: [
            example(x, gamma, beta, mean.astype(dtype), var.astype(dtype))
        ],
        dtype,
    )


def batchnorm_backward(dtype):
    return _batchnorm(
        lambda x, gamma, beta, mean, var, std, xn, dout: [
            example(dout, xn, std.astype(dtype), gamma)
        ],
        dtype,
    )


def batchnorm_backward_from_input(dtype):
    return _batchnorm(
        lambda x, gamma, beta, mean, var, std, xn, dout: [example(dout, x, mean, std, gamma)], dtype
    )
