"""Compile (or load from the cache) every kernel for float32 and float64 ahead of a job.

Run ``python -m nnkernels.precompile`` once after installing, or before starting several
processes at once: Numba's cache can be corrupted when several processes write it at the
same time, so warm it from one job first.

The work is split into groups of kernels (one public operation each). With more than one
process, groups are handed to worker processes, so every cache index file (one per kernel
function) is written by one process only; a parallel compile of a kernel takes 1-2 s, so
this divides the wall time by about the number of cores.
"""

import concurrent.futures
import multiprocessing
import os
import time

import numpy as np

from . import _blas, _jit, activations, batchnorm, columns, convolution, pooling

__all__ = ["precompile"]


def _relu(dtype):
    x = np.ones((2, 2, 5, 5), dtype=dtype)
    out, mask = activations.relu_forward(x)
    activations.relu_backward(out, mask)


def _book_columns(dtype):
    x = np.ones((2, 2, 5, 5), dtype=dtype)
    col = columns.im2col(x, 3, 3, 1, 1)
    columns.col2im(col, x.shape, 3, 3, 1, 1)


def _per_sample_columns(dtype):
    x = np.ones((2, 2, 5, 5), dtype=dtype)
    cols = columns.im2col_per_sample(x, 3, 3, 1, 1)
    columns.col2im_per_sample(cols, x.shape, 3, 3, 1, 1)


def _convolution(dtype):
    x = np.ones((2, 2, 5, 5), dtype=dtype)
    W = np.ones((3, 2, 3, 3), dtype=dtype)
    out = convolution.conv_forward(x, W, 0.0, 1, 1)
    convolution.conv_backward(out, x, W, 1, 1)


def _max_pool(dtype):
    x = np.ones((2, 2, 6, 6), dtype=dtype)
    out, argmax = pooling.maxpool_forward(x, 2, 2, 2, 0)
    pooling.maxpool_backward(out, argmax, x.shape, 2, 2, 2, 0)


def _batchnorm(shape, dtype):
    x = np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape).astype(dtype)
    n_stats = shape[1]
    gamma = np.ones(n_stats, dtype=dtype)
    beta = np.zeros(n_stats, dtype=dtype)
    out, xn, mean, var, std = batchnorm.batchnorm_forward(x, gamma, beta)
    batchnorm.batchnorm_inference(x, gamma, beta, mean, var)
    batchnorm.batchnorm_backward(out, xn, std, gamma)
    # the layer's pair: the same compiled kernels, called with other arguments
    out, _, mean, _, std = batchnorm.batchnorm_forward(x, gamma, beta, return_xn=False,
                                                       stats_dtype=np.float64)
    batchnorm.batchnorm_backward_from_input(out, x, mean, std, gamma)


#: name -> (function(dtype) calling the kernels of one operation, whether single-threaded
#: twins are used). Batch norm picks its kernels by shape: few features (or channels) over
#: at least ``PARALLEL_THRESHOLD`` elements take the split path, whose reductions therefore
#: never run single-threaded (its normalising kernel does, for inference on small input).
#: Listed slowest first (compile time of each group for both dtypes, cold cache, one
#: process): the worker pool takes them in this order, so the long ones do not come last.
_GROUPS = {
    "batchnorm (N, D)": (lambda dtype: _batchnorm((2, 3), dtype), True),
    "batchnorm (N, C, H, W)": (lambda dtype: _batchnorm((2, 3, 2, 2), dtype), True),
    "max pooling 2x2 stride 2": (_max_pool, True),
    "im2col/col2im": (_book_columns, True),
    # the layers' twins are used only where the fused convolution kernels are unavailable
    "im2col/col2im per sample": (_per_sample_columns, not _blas.AVAILABLE),
    "batchnorm (N, D), few features": (lambda dtype: _batchnorm((400, 100), dtype), False),
    "batchnorm (N, C, H, W), few channels": (lambda dtype: _batchnorm((4, 2, 80, 80), dtype), False),
    "relu": (_relu, True),
}
if _blas.AVAILABLE:  # one multi-threaded kernel each way, no twins (a launch costs ~2 us)
    _GROUPS = {"convolution": (_convolution, False), **_GROUPS}


def _compile_group(name, dtypes):
    """Compile one group's kernels (multi-threaded and single-threaded) for ``dtypes``."""
    call, with_twins = _GROUPS[name]
    timings = {}
    for dtype in dtypes:
        start = time.perf_counter()
        if with_twins:
            with _jit.serial_in_this_thread():
                call(np.dtype(dtype))
        with _jit.forced_parallel():
            call(np.dtype(dtype))
        timings[np.dtype(dtype).name] = time.perf_counter() - start
    return timings


def _default_processes():
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, len(_GROUPS)))


def precompile(dtypes=("float32", "float64"), processes=None, load=True):
    """Compile every kernel for each dtype; return ``{dtype name: seconds}``.

    Both the multi-threaded kernels and their single-threaded twins (used below
    ``PARALLEL_THRESHOLD`` elements of work) are compiled. Max pooling compiles one kernel
    per (window, stride); the 2x2 stride-2 one is compiled here, others on first use.

    ``processes``: worker processes to compile in (default: one per available core; 1
    compiles in this process). The returned seconds are then each dtype's share of the
    wall time, in proportion to its compile time. With ``load`` (default), the kernels
    the workers compiled are then loaded into this process too.
    """
    dtypes = tuple(np.dtype(d).name for d in dtypes)
    processes = _default_processes() if processes is None else processes
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive int, got {processes!r}")
    start = time.perf_counter()
    spent = {dtype: 0.0 for dtype in dtypes}
    if processes > 1:
        context = multiprocessing.get_context("spawn")  # never fork a process using threads
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            futures = [pool.submit(_compile_group, name, dtypes) for name in _GROUPS]
            for future in futures:
                for dtype, seconds in future.result().items():
                    spent[dtype] += seconds
    if processes == 1 or load:
        for name in _GROUPS:  # from the now warm cache when workers compiled
            for dtype, seconds in _compile_group(name, dtypes).items():
                spent[dtype] += seconds
    wall = time.perf_counter() - start
    total = sum(spent.values()) or 1.0
    return {dtype: wall * seconds / total for dtype, seconds in spent.items()}
