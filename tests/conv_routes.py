"""The two routes a Convolution layer can take, for tests that must run both.

``kernels``: the fused kernels (where the library's BLAS is); ``matmul``: per-sample columns
and matrix products, which the layer falls back to elsewhere and takes for batches with
fewer samples than threads.
"""

import nnkernels

ROUTES = ["kernels", "matmul"] if nnkernels.conv_kernels_available() else ["matmul"]


def convolution_route(route):
    """Within this block (in this thread), Convolution layers take ``route``."""
    if route not in ROUTES:
        raise ValueError(f"route {route!r} is not available here ({ROUTES})")
    return nnkernels.config_context(conv_route=route)
