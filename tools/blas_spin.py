"""OpenBLAS's idle spin against the Numba kernel that follows a matrix product.

``python tools/blas_spin.py float32`` times, on conv C's shapes (``nnbench.cases``: N=64,
64x32x32, 64 filters 3x3), the column kernels and the products alone and back to back, in
ms (median of 9, ``nnbench.timing``). Run it under ``OPENBLAS_THREAD_TIMEOUT=28``
(OpenBLAS's default spin, about 0.1 s) and ``OPENBLAS_THREAD_TIMEOUT=16`` (what
``nnkernels.set_config(blas_spin_exponent=16)`` applies): with the long spin, a pair costs
more than its two pieces. OpenBLAS reads the variable when NumPy is imported, so set it
before starting Python. ``--quick``: batch of 4, 2 calls.
"""

import argparse
import os

import numpy as np

import nnkernels
from nnbench.cases import case_data, get_cases
from nnbench.timing import median_seconds


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/blas_spin.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    case = get_cases("conv_c")[0].scaled(args.quick)
    d = case_data(case, args.dtype)
    x, fn = d["x"], case.params["filters"]
    n = x.shape[0]
    weights = d["W"].reshape(fn, -1)
    cols = nnkernels.im2col_per_sample(x, 3, 3, 1, 1)
    out = np.empty((n, fn, cols.shape[2]), x.dtype)
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

    repeat = 2 if args.quick else 9
    spin = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset")
    print(f"{args.dtype}, OPENBLAS_THREAD_TIMEOUT={spin}")
    for name, fn_ in [
        ("im2col", im2col),
        ("forward product", forward_product),
        ("im2col + forward product", pair(im2col, forward_product)),
        ("columns product", columns_product),
        ("col2im", col2im),
        ("columns product + col2im", pair(columns_product, col2im)),
    ]:
        print(f"  {name:26s} {median_seconds(fn_, repeat) * 1e3:7.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
