"""What the library found and decided in this process: :func:`runtime_info` and
:func:`show_config`."""

import importlib.metadata
import os
import platform
import sys

import numba

from . import config
from .runtime import blas, jit
from .runtime.partition import get_num_threads, threading_layer
from .runtime.process import STATE

__all__ = ["runtime_info", "show_config"]


def _versions():
    import llvmlite
    import numpy

    try:
        version = importlib.metadata.version("nnkernels")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed (run from a source tree)"
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "nnkernels": version,
    }


def _cpu():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count()
    return {"model": model, "cores": os.cpu_count(), "available": available}


def _cache_dir():
    kernels = jit.all_kernels()
    cache = getattr(kernels[0].dispatcher, "_cache", None) if kernels else None
    path = getattr(cache, "_cache_path", None)
    return numba.config.CACHE_DIR or path or "none (no writable location: kernels uncached)"


def _numpy_blas():
    """NumPy's BLAS as its build describes it (nothing is called in that library)."""
    import numpy

    try:
        blas_info = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{blas_info.get('name')} {blas_info.get('version', '')}".strip()
    except (TypeError, KeyError, AttributeError):  # NumPy without mode="dicts"
        name = "unknown"
    return {"library": name, "used_by_nnkernels": False}


def runtime_info():
    """What the library found and decided in this process, as a ``dict``.

    Loads nothing: before the first product, ``blas`` says which BLAS the library will load.
    """
    helpers = STATE.helpers
    return {
        "versions": _versions(),
        "cpu": _cpu(),
        "threads": {
            "in_this_thread": get_num_threads(),
            "setting": config.get("threads"),
            "maximum": numba.config.NUMBA_NUM_THREADS,
            "helper_threads": helpers.size,
            "how": "single-threaded kernels, the work shared over the calling thread and "
            "helper threads; Numba's threading layer is never started",
            "numba_threading_layer": threading_layer(),
        },
        "blas": blas.describe(),
        "numpy_blas": _numpy_blas(),
        "conv_kernels": {
            "available": STATE.blas.handle is not None if STATE.blas.looked else None,
            "reason": "need the library's BLAS (see blas)",
        },
        "jit_cache_dir": _cache_dir(),
        "config": config.get_config(),
    }


def _lines(value, indent):
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                yield f"{pad}{key}:"
                yield from _lines(item, indent + 2)
            else:
                yield f"{pad}{key}: {item}"
    elif isinstance(value, list):
        for item in value:
            yield f"{pad}-"
            yield from _lines(item, indent + 2)
    else:
        yield f"{pad}{value}"


def show_config(file=None):
    """Print versions, CPU, threads, the library's BLAS, fused-kernel
    availability, JIT cache and every setting (the content of :func:`runtime_info`).

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: ``sys.stdout``).
    """
    print("\n".join(_lines(runtime_info(), 0)), file=file or sys.stdout)
