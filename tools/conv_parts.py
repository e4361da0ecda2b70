"""Convolution forward and backward with the samples shared over threads vs in one part.

``python tools/conv_parts.py float32``: conv A/B/C of the benchmark and DeepConvNet's
layers 2, 7 and 12, ms (median of 9), ``forward + backward``, with
``nnlayers._products.SPLIT_MIN_MACS`` at its default ("shared") and raised so that every
batch stays in one part ("one part", which then uses the kernels' and OpenBLAS's own
threads). Both settings alternate twice. This is the columns + matmul route (forced): the
fused kernels share samples in their own ``prange`` (``tools/conv_routes.py``).

Also the shapes and the forward+backward closures that ``tools/conv_chunking.py`` and
``tools/conv_routes.py`` time.
"""

import contextlib
import sys

import numpy as np

import nnlayers
import nnlayers._products as products
import nnlayers.layers
from _timing import median_ms

SHAPES = {"A": (100, 1, 28, 28, 30, 5, 5, 1, 0), "B": (100, 16, 14, 14, 32, 3, 3, 1, 1),
          "C": (64, 64, 32, 32, 64, 3, 3, 1, 1), "L2": (100, 16, 28, 28, 16, 3, 3, 1, 1),
          "L7": (100, 32, 14, 14, 32, 3, 3, 1, 2), "L12": (100, 64, 8, 8, 64, 3, 3, 1, 1)}


@contextlib.contextmanager
def forced_route(route):
    """Within this block Convolution layers take ``route`` ("kernels" or "matmul")."""
    previous, nnlayers.layers._CONV_ROUTE = nnlayers.layers._CONV_ROUTE, route
    try:
        yield
    finally:
        nnlayers.layers._CONV_ROUTE = previous


def conv_inputs(name, dtype, rng):
    """``(x, weights, stride, pad)`` of shape ``name`` in ``dtype``."""
    N, C, H, W, FN, FH, FW, stride, pad = SHAPES[name]
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    weights = (0.1 * rng.standard_normal((FN, C, FH, FW))).astype(dtype)
    return x, weights, stride, pad


def forward_backward(module, x, weights, stride, pad, setting=contextlib.nullcontext):
    """A call running forward+backward of one ``module.Convolution`` (zero bias) on ``x``,
    inside ``setting()`` (a context manager factory), after one call to build it."""
    layer = module.Convolution(weights, np.zeros(weights.shape[0], x.dtype), stride, pad)
    dout = np.ones_like(layer.forward(x))

    def run():
        with setting():
            layer.forward(x)
            layer.backward(dout)
    return run


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    default = products.SPLIT_MIN_MACS
    rng = np.random.default_rng(0)
    for name in SHAPES:
        x, weights, stride, pad = conv_inputs(name, dtype, rng)
        layer = nnlayers.Convolution(weights, np.zeros(weights.shape[0], dtype), stride, pad)
        dout = np.ones_like(layer.forward(x))
        times = {}
        try:
            with forced_route("matmul"):
                for mode in ("shared", "one part", "shared", "one part"):
                    products.SPLIT_MIN_MACS = default if mode == "shared" else 1 << 62
                    fwd = median_ms(lambda: layer.forward(x))
                    bwd = median_ms(lambda: layer.backward(dout))
                    times.setdefault(mode, []).append(f"{fwd:.2f} + {bwd:.2f}")
        finally:
            products.SPLIT_MIN_MACS = default
        print(f"{name:4s} {dtype.name}  " + "   ".join(f"{k}: {', '.join(v)}" for k, v in times.items()))


if __name__ == "__main__":
    main()
