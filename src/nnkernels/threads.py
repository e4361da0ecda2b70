"""One place to set how many threads the kernels and NumPy's BLAS use."""

import numba

__all__ = ["set_num_threads", "get_num_threads", "threading_layer"]


def set_num_threads(n):
    """Use ``n`` threads in the Numba kernels and in NumPy's BLAS; returns the previous count.

    BLAS threads are set through ``threadpoolctl`` when it is installed (the ``bench``
    extra); otherwise set ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` before starting Python.
    ``n`` must be between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the core count unless
    ``NUMBA_NUM_THREADS`` says otherwise).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    maximum = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= maximum:
        raise ValueError(f"n must be between 1 and {maximum} (NUMBA_NUM_THREADS), got {n}")
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(limits=n, user_api="blas")
    return previous


def get_num_threads():
    """The number of threads the Numba kernels use in this thread."""
    return numba.get_num_threads()


def threading_layer():
    """Name of the Numba threading layer in use (``None`` before any parallel kernel ran)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None
