"""Compile (or load from the cache) every kernel for float32 and float64 ahead of a job.

Run ``python -m nnkernels.precompile`` once after installing, or before starting several
processes at once: Numba's cache can be corrupted when several processes write it at the
same time, so warm it from one process first.
"""

import time

import numpy as np

from . import _jit, activations, batchnorm, columns, pooling

__all__ = ["precompile"]


def _exercise(dtype):
    x = np.ones((2, 2, 5, 5), dtype=dtype)
    out, mask = activations.relu_forward(x)
    activations.relu_backward(out, mask)
    col = columns.im2col(x, 3, 3, 1, 1)
    columns.col2im(col, x.shape, 3, 3, 1, 1)
    cols = columns.im2col_per_sample(x, 3, 3, 1, 1)
    columns.col2im_per_sample(cols, x.shape, 3, 3, 1, 1)
    out, argmax = pooling.maxpool_forward(x, 2, 2, 2, 0)
    pooling.maxpool_backward(out, argmax, x.shape, 2, 2, 2, 0)
    for xb in (x, x.reshape(2, -1)):
        n_stats = xb.shape[1]
        gamma = np.ones(n_stats, dtype=dtype)
        beta = np.zeros(n_stats, dtype=dtype)
        out, xn, mean, var, std = batchnorm.batchnorm_forward(xb, gamma, beta)
        batchnorm.batchnorm_inference(xb, gamma, beta, mean, var)
        batchnorm.batchnorm_backward(out, xn, std, gamma)


def precompile(dtypes=("float32", "float64")):
    """Compile every kernel for each dtype; return ``{dtype name: seconds}``.

    Both the multi-threaded kernels and their single-threaded twins (used below
    ``PARALLEL_THRESHOLD`` elements of work) are compiled. Max pooling compiles one kernel
    per (window, stride); the 2x2 stride-2 one is compiled here, others on first use.
    """
    timings = {}
    for dtype in dtypes:
        start = time.perf_counter()
        _exercise(np.dtype(dtype))
        with _jit.forced_parallel():
            _exercise(np.dtype(dtype))
        timings[np.dtype(dtype).name] = time.perf_counter() - start
    return timings
