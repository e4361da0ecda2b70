"""Time the pieces of a Convolution forward+backward alone.

``python tools/profile_conv.py float32 [book|deep]``: ``book`` is conv A/B/C of the
benchmark set, ``deep`` the DeepConvNet layers 2, 4 and 6 (L2, L7, L12 in its layer list).
Each piece runs on reused buffers; medians of 9 repeats in ms. ``dW_einsum`` and
``dW_other_order`` (``dout @ cols.T`` per sample, what the layer did before) are
alternative formulations shown for comparison (not in the total).
"""

import sys

import numpy as np

import nnkernels
from _timing import median_ms

SHAPE_SETS = {
    "book": {"A": (100, 1, 28, 28, 30, 5, 5, 1, 0), "B": (100, 16, 14, 14, 32, 3, 3, 1, 1),
             "C": (64, 64, 32, 32, 64, 3, 3, 1, 1)},
    "deep": {"L2": (100, 16, 28, 28, 16, 3, 3, 1, 1), "L7": (100, 32, 14, 14, 32, 3, 3, 1, 2),
             "L12": (100, 64, 8, 8, 64, 3, 3, 1, 1)},
}


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    shapes = SHAPE_SETS[sys.argv[2] if len(sys.argv) > 2 else "book"]
    rng = np.random.default_rng(0)
    for name, (N, C, H, W, FN, FH, FW, s, p) in shapes.items():
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        weights = rng.standard_normal((FN, C * FH * FW)).astype(dtype)
        cols = nnkernels.im2col_per_sample(x, FH, FW, s, p)
        d = rng.standard_normal((N, FN, cols.shape[2])).astype(dtype)
        out = np.empty((N, FN, cols.shape[2]), dtype)
        dcols = np.empty_like(cols)
        dx = np.empty_like(x)
        r = {
            "im2col": median_ms(lambda: nnkernels.im2col_per_sample(x, FH, FW, s, p, out=cols)),
            "fwd_gemm": median_ms(lambda: np.matmul(weights, cols, out=out)),
            "dW": median_ms(lambda: np.matmul(cols, d.transpose(0, 2, 1)).sum(0)),
            "dcol_gemm": median_ms(lambda: np.matmul(weights.T, d, out=dcols)),
            "col2im": median_ms(lambda: nnkernels.col2im_per_sample(dcols, x.shape, FH, FW, s, p, out=dx)),
            "db": median_ms(lambda: d.sum(axis=(0, 2))),
        }
        total = sum(r.values())
        r["dW_einsum"] = median_ms(lambda: np.einsum("nfp,nkp->fk", d, cols, optimize=True))
        r["dW_other_order"] = median_ms(lambda: np.matmul(d, cols.transpose(0, 2, 1)).sum(0))
        print(name, dtype, "  ".join(f"{k}={v:.2f}" for k, v in r.items()), f"total={total:.1f}ms")


if __name__ == "__main__":
    main()
