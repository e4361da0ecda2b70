"""The one decorator every kernel uses, so compile options live in one place."""

from numba import njit

__all__ = ["parallel_kernel", "serial_kernel"]


def parallel_kernel(fn):
    """Compile ``fn`` as a cached, GIL-free, multi-threaded (``prange``) kernel.

    ``error_model="numpy"`` drops Python's division-by-zero checks (kernels receive
    validated input and NaN/inf must propagate as in NumPy); ``fastmath`` stays off so
    results are reproducible and match the reference bit-for-bit where the math allows.
    """
    return njit(parallel=True, cache=True, nogil=True, error_model="numpy", fastmath=False)(fn)


def serial_kernel(fn):
    """Compile ``fn`` as a cached, GIL-free single-threaded kernel (for small helpers)."""
    return njit(parallel=False, cache=True, nogil=True, error_model="numpy", fastmath=False)(fn)
