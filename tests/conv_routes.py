"""The two routes a Convolution layer can take, for tests that must run both.

``kernels``: the fused kernels of ``nnkernels.convolution`` (where NumPy's OpenBLAS can be
called from Numba); ``matmul``: per-sample columns and ``numpy.matmul`` shared over Python
threads, which the layer falls back to elsewhere and takes for small or few-sample batches.
"""

import contextlib

import nnkernels._blas
import nnlayers.layers

ROUTES = ["kernels", "matmul"] if nnkernels._blas.AVAILABLE else ["matmul"]


@contextlib.contextmanager
def convolution_route(route):
    """Within this block, Convolution layers take ``route``, whatever the batch."""
    if route not in ROUTES:
        raise ValueError(f"route {route!r} is not available here ({ROUTES})")
    previous = nnlayers.layers._CONV_ROUTE
    nnlayers.layers._CONV_ROUTE = route
    try:
        yield
    finally:
        nnlayers.layers._CONV_ROUTE = previous
