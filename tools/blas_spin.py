"""OpenBLAS's idle spin against the Numba kernel that follows a matrix product.

``python tools/blas_spin.py float32`` times, on conv C's shapes (N=64, 64x32x32, 64
filters 3x3), the column kernels and the products alone and back to back, in ms (median
of 9). Run it under ``OPENBLAS_THREAD_TIMEOUT=28`` (OpenBLAS's default spin, kept because
the variable is set) and without it (``import nnkernels`` then shortens the spin to 2**16
cycles): with the long spin, a pair costs more than its two pieces.
"""

import os
import sys

import numpy as np

import nnkernels
from _timing import median_ms


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64, 32, 32)).astype(dtype)
    weights = (0.1 * rng.standard_normal((64, 576))).astype(dtype)
    cols = nnkernels.im2col_per_sample(x, 3, 3, 1, 1)
    out = np.empty((64, 64, 1024), dtype)
    dout = np.ones_like(out)
    dcols = np.empty_like(cols)
    dx = np.empty_like(x)

    def im2col():
        nnkernels.im2col_per_sample(x, 3, 3, 1, 1, out=cols)

    def forward_product():
        np.matmul(weights, cols, out=out)

    def columns_product():
        np.matmul(weights.T, dout, out=dcols)

    def col2im():
        nnkernels.col2im_per_sample(dcols, x.shape, 3, 3, 1, 1, out=dx)

    def pair(first, second):
        def run():
            first()
            second()
        return run

    spin = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "16 (set by nnkernels)")
    print(f"{dtype.name}, OPENBLAS_THREAD_TIMEOUT={spin}")
    for name, fn in [("im2col", im2col), ("forward product", forward_product),
                     ("im2col + forward product", pair(im2col, forward_product)),
                     ("columns product", columns_product), ("col2im", col2im),
                     ("columns product + col2im", pair(columns_product, col2im))]:
        print(f"  {name:26s} {median_ms(fn):7.2f} ms")


if __name__ == "__main__":
    main()
