"""Per-sample products against one product over the whole batch, the three GEMMs of a
convolution, in ms (median of 9): ``python tools/gemm_grouping.py float32``.

Per sample (the layer's layout, ``cols`` ``(N, K, P)``): ``W @ cols[n]``, ``sum_n cols[n] @
dout[n].T`` and ``W.T @ dout[n]``. One product (a ``(K, N*P)`` layout): the same three as
single GEMMs. Shapes: conv A/B/C of the benchmark and DeepConvNet's layers 2, 7, 12 as
``(N, FN, K, P)``. The transposes and column kernels that layout would need are not timed.
"""

import sys

import numpy as np

from _timing import median_ms

SHAPES = {"A": (100, 30, 25, 576), "B": (100, 32, 144, 196), "C": (64, 64, 576, 1024),
          "L2": (100, 16, 144, 784), "L7": (100, 32, 288, 256), "L12": (100, 64, 576, 64)}


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    rng = np.random.default_rng(0)
    for name, (N, FN, K, P) in SHAPES.items():
        weights = rng.standard_normal((FN, K)).astype(dtype)
        cols = rng.standard_normal((N, K, P)).astype(dtype)
        dout = rng.standard_normal((N, FN, P)).astype(dtype)
        out, dcols = np.empty((N, FN, P), dtype), np.empty_like(cols)
        cols_2d = rng.standard_normal((K, N * P)).astype(dtype)
        dout_2d = rng.standard_normal((FN, N * P)).astype(dtype)
        out_2d, dcols_2d = np.empty((FN, N * P), dtype), np.empty((K, N * P), dtype)
        per_sample = [median_ms(lambda: np.matmul(weights, cols, out=out)),
                      median_ms(lambda: np.matmul(cols, dout.transpose(0, 2, 1)).sum(0)),
                      median_ms(lambda: np.matmul(weights.T, dout, out=dcols))]
        one = [median_ms(lambda: np.matmul(weights, cols_2d, out=out_2d)),
               median_ms(lambda: np.matmul(dout_2d, cols_2d.T)),
               median_ms(lambda: np.matmul(weights.T, dout_2d, out=dcols_2d))]
        print(f"{name:4s} {dtype.name}  per sample fwd/dW/dcols "
              + "/".join(f"{v:.2f}" for v in per_sample) + f" = {sum(per_sample):.2f}"
              + "   one product " + "/".join(f"{v:.2f}" for v in one) + f" = {sum(one):.2f}")


if __name__ == "__main__":
    main()
