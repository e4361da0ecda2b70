"""Compile (or load from the cache) every kernel for float32 and float64 ahead of a job.

Run ``python -m nnkernels.precompile`` once after installing, or before starting several
processes at once: Numba's cache can be corrupted when several processes write it at the
same time, so warm it from one job first.

Every example call of the kernel table (:mod:`nnkernels.registry`) runs once. The table's
groups (functions sharing kernels) are handed to worker processes, so every cache index
file (one per kernel function) is written by one process only; this divides the wall time
by about the number of cores.
"""

import multiprocessing
import os
import signal
import time

import numpy as np

from . import registry
from .kernels import (  # noqa: F401 - importing a kernel module registers its functions
    activations,
    batchnorm,
    columns,
    convolution,
    pooling,
    products,
)

__all__ = ["precompile", "kernel_groups"]

_SLOWEST = ("convolution", "batchnorm")  # compile time of a group, cold cache


def _compile_group(group, dtypes):
    """Run one group's examples for ``dtypes``."""
    names = registry.groups()[group]
    timings = {}
    for dtype in dtypes:
        start = time.perf_counter()
        for _, run in registry.example_calls(dtype, names):
            run()
        timings[np.dtype(dtype).name] = time.perf_counter() - start
    return timings


def kernel_groups():
    """``{group: [function name, ...]}``: the groups of the kernel table, each compiled in
    one process by :func:`precompile` (functions that share kernels or inputs)."""
    return registry.groups()


def _ignore_interrupts():
    # in a worker: Ctrl-C reaches the whole process group; the parent alone handles it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_pool(processes):
    """A pool of ``processes`` spawned workers (never forked: this process may run threads)
    that ignore Ctrl-C from their start, so that none prints a traceback when interrupted
    while still importing: they are spawned while this process ignores SIGINT, which a
    spawned process inherits. SIGINT is blocked meanwhile too, so that a Ctrl-C pressed
    then stays pending (Linux never discards a blocked signal) and reaches this process
    once the pool has started."""
    context = multiprocessing.get_context("spawn")
    block = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ()) if block else None
    handler = signal.getsignal(signal.SIGINT)
    try:
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return context.Pool(processes, initializer=_ignore_interrupts)
    finally:
        signal.signal(signal.SIGINT, handler)
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _in_workers(processes, groups, dtypes):
    """``_compile_group`` of every group in ``processes`` spawned workers; their timings.

    On any exception in this process (Ctrl-C included) the workers are killed before it
    propagates, and further Ctrl-C is ignored meanwhile, so that neither a first nor a
    second interrupt can leave this process waiting on workers that wait on it.
    """
    pool = _start_pool(min(processes, len(groups)) or 1)
    try:
        pending = [pool.apply_async(_compile_group, (group, dtypes)) for group in groups]
        timings = [result.get() for result in pending]
        pool.close()
        pool.join()
        return timings
    except BaseException:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            pool.terminate()
            pool.join()
        finally:
            signal.signal(signal.SIGINT, previous)
        raise


def _default_processes():
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, len(registry.groups())))


def precompile(dtypes=("float32", "float64"), processes=None, load=True, groups=None):
    """Compile every kernel for each dtype; return ``{dtype name: seconds}``.

    Max pooling compiles one kernel per (window, stride); the 2x2 stride-2 one is compiled
    here, others on first use.

    ``processes``: worker processes to compile in (default: one per available core; 1
    compiles in this process). The returned seconds are then each dtype's share of the
    wall time, in proportion to its compile time. With ``load`` (default), the kernels
    the workers compiled are then loaded into this process too. ``groups``: names of the
    kernel table's groups (``registry.groups()``) to compile, default all.
    """
    dtypes = tuple(np.dtype(d).name for d in dtypes)
    processes = _default_processes() if processes is None else processes
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive int, got {processes!r}")
    start = time.perf_counter()
    spent = {dtype: 0.0 for dtype in dtypes}
    known = registry.groups()
    unknown = sorted(set(groups or ()) - set(known))
    if unknown:
        raise ValueError(f"groups: unknown kernel group(s) {unknown}; known: {sorted(known)}")
    chosen = known if groups is None else [group for group in known if group in groups]
    # the slowest groups first, so that the worker pool does not end on one of them
    groups = sorted(chosen, key=lambda group: group not in _SLOWEST)
    if processes > 1:
        for timings in _in_workers(processes, groups, dtypes):
            for dtype, seconds in timings.items():
                spent[dtype] += seconds
    if processes == 1 or load:
        for group in groups:  # from the now warm cache when workers compiled
            for dtype, seconds in _compile_group(group, dtypes).items():
                spent[dtype] += seconds
    wall = time.perf_counter() - start
    total = sum(spent.values()) or 1.0
    return {dtype: wall * seconds / total for dtype, seconds in spent.items()}
