"""The one decorator every kernel uses, and the threading layer it runs on.

Threading layer (chosen once, at import, unless the user already chose one with
``NUMBA_THREADING_LAYER`` or ``numba.config.THREADING_LAYER``):

* ``tbb`` when Intel TBB is installed (``pip install 'nnkernels[tbb]'``): thread-safe and
  fork-safe. pip puts ``libtbb.so.12`` in the environment's ``lib/``, which the dynamic
  loader does not search, so it is loaded here by path before Numba looks for it;
* otherwise ``workqueue``: fork-safe (GNU OpenMP aborts a child forked after a parallel
  region), but it aborts the process when two Python threads launch kernels at once, so
  with it every kernel launch holds one process-wide lock.
"""

import ctypes
import glob
import os
import sys
import threading

import numba
from numba import njit

__all__ = ["parallel_kernel", "serial_kernel", "chosen_threading_layer"]

_KERNEL_LOCK = threading.Lock()


def _load_pip_tbb():
    """Make a pip-installed TBB visible to Numba; return True when it loaded."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return True
            except OSError:
                continue
    try:
        ctypes.CDLL("libtbb.so.12", mode=ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        return False


def _choose_threading_layer():
    if os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER != "default":
        return numba.config.THREADING_LAYER
    layer = "tbb" if _load_pip_tbb() else "workqueue"
    numba.config.THREADING_LAYER = layer
    return layer


_LAYER = _choose_threading_layer()


def chosen_threading_layer():
    """The layer requested at import (``numba.threading_layer()`` tells the one in use)."""
    return _LAYER


def _needs_lock():
    return numba.config.THREADING_LAYER == "workqueue"


class _Kernel:
    """A compiled kernel; calls are serialised when the threading layer is not thread-safe."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.__name__ = dispatcher.py_func.__name__
        self.__doc__ = dispatcher.py_func.__doc__

    def __call__(self, *args):
        if _needs_lock():
            with _KERNEL_LOCK:
                return self.dispatcher(*args)
        return self.dispatcher(*args)


def parallel_kernel(fn):
    """Compile ``fn`` as a cached, GIL-free, multi-threaded (``prange``) kernel.

    ``error_model="numpy"`` drops Python's division-by-zero checks (kernels receive
    validated input and NaN/inf must propagate as in NumPy); ``fastmath`` stays off so
    results are reproducible and match the reference where the math allows.
    """
    return _Kernel(njit(parallel=True, cache=True, nogil=True, error_model="numpy", fastmath=False)(fn))


def serial_kernel(fn):
    """Compile ``fn`` as a cached, GIL-free single-threaded kernel (for small helpers)."""
    return _Kernel(njit(parallel=False, cache=True, nogil=True, error_model="numpy", fastmath=False)(fn))
