"""The two routes a Convolution layer can take, for tests that must run both.

``kernels``: the fused kernels of ``nnkernels.convolution`` (where NumPy's OpenBLAS can be
called from Numba); ``matmul``: per-sample columns and ``numpy.matmul`` shared over Python
threads, which the layer falls back to elsewhere.
"""

import contextlib

import nnkernels._blas

ROUTES = ["kernels", "matmul"] if nnkernels._blas.AVAILABLE else ["matmul"]


@contextlib.contextmanager
def convolution_route(route):
    """Within this block, Convolution layers take ``route``."""
    if route not in ("kernels", "matmul"):
        raise ValueError(route)
    previous = nnkernels._blas.AVAILABLE
    nnkernels._blas.AVAILABLE = previous and route == "kernels"
    try:
        yield
    finally:
        nnkernels._blas.AVAILABLE = previous
