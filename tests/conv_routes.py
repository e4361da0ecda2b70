"""The two routes a Convolution layer can take, for tests that must run both.

``kernels``: the fused kernels of ``nnkernels.convolution`` (where NumPy's OpenBLAS can be
called from Numba); ``matmul``: per-sample columns and ``numpy.matmul`` shared over Python
threads, which the layer falls back to elsewhere and takes for small or few-sample batches.
"""

import nnkernels
from nnkernels.conv_routes import KERNELS

ROUTES = ["kernels", "matmul"] if KERNELS.available() else ["matmul"]


def convolution_route(route):
    """Within this block (in this thread), Convolution layers take ``route``."""
    if route not in ROUTES:
        raise ValueError(f"route {route!r} is not available here ({ROUTES})")
    return nnkernels.config_context(conv_route=route)
