"""A direct convolution written plainly in Numba against the layer's column route.

``python tools/direct_conv_probe.py float32``: forward only, one thread (as each thread runs
its share of the samples in the layer), for conv B's and conv C's shapes (a share of 50
and 32 samples) and DeepConvNet's layers 2 and 12: "columns" is what the layer does
(``im2col_per_sample`` + one OpenBLAS product per sample + bias), "direct" accumulates
``out[f] += W[f, c, ky, kx] * shifted input plane`` four filters at a time over a padded
copy of each sample (FMA contraction allowed, the loop vectorised by LLVM). Median ms of 15,
three rounds, and the largest difference between the two outputs.
"""

import sys

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

import nnkernels
from _timing import median_ms


@njit(nogil=True, error_model="numpy", fastmath={"contract"})
def direct_forward(x, W, b, pad, out):
    """``out[n, f] = b[f] + sum over c, ky, kx`` for stride 1; FN a multiple of 4."""
    N, C, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp, Wp = H + 2 * pad, Wd + 2 * pad
    run = OH * Wp - (FW - 1)  # output rows computed Wp wide; the extra columns are dropped
    xpad = np.zeros((C, Hp * Wp), x.dtype)
    acc = np.empty((4, OH * Wp), x.dtype)
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for i in range(Wd):
                    xpad[c, (y + pad) * Wp + i + pad] = x[n, c, y, i]
        for f0 in range(0, FN, 4):
            for k in range(4):
                acc[k, :] = b[f0 + k]
            a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
            for c in range(C):
                plane = xpad[c]
                for ky in range(FH):
                    for kx in range(FW):
                        offset = np.uint64(ky * Wp + kx)
                        w0, w1 = W[f0, c, ky, kx], W[f0 + 1, c, ky, kx]
                        w2, w3 = W[f0 + 2, c, ky, kx], W[f0 + 3, c, ky, kx]
                        for p in range(np.uint64(run)):
                            v = plane[offset + p]
                            a0[p] += w0 * v
                            a1[p] += w1 * v
                            a2[p] += w2 * v
                            a3[p] += w3 * v
            for k in range(4):
                for y in range(OH):
                    for i in range(OW):
                        out[n, f0 + k, y, i] = acc[k, y * Wp + i]


def columns_forward(x, W, b, cols, out):
    N, FN = x.shape[0], W.shape[0]
    with nnkernels.threads.single_threaded_kernels():
        c = nnkernels.im2col_per_sample(x, W.shape[2], W.shape[3], 1, 1, out=cols)
    flat = out.reshape(N, FN, -1)
    np.matmul(W.reshape(FN, -1), c, out=flat)
    flat += b[:, None]


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    shapes = {"B": (50, 16, 14, 14, 32), "C": (32, 64, 32, 32, 64),
              "L2": (50, 16, 28, 28, 16), "L12": (50, 64, 8, 8, 64)}
    rng = np.random.default_rng(0)
    for name, (N, C, H, Wd, FN) in shapes.items():
        x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
        W = rng.standard_normal((FN, C, 3, 3)).astype(dtype)
        b = rng.standard_normal(FN).astype(dtype)
        ours, direct = np.empty((N, FN, H, Wd), dtype), np.empty((N, FN, H, Wd), dtype)
        cols = np.empty((N, C * 9, H * Wd), dtype)
        with threadpool_limits(1, user_api="blas"):
            columns_forward(x, W, b, cols, ours)
            direct_forward(x, W, b, 1, direct)
            rounds = [(median_ms(lambda: columns_forward(x, W, b, cols, ours), 15),
                       median_ms(lambda: direct_forward(x, W, b, 1, direct), 15))
                      for _ in range(3)]
        print(f"{name:4s} {dtype.name} max |difference| {np.abs(ours - direct).max():.1e}  "
              + "   ".join(f"columns {a:.2f} direct {d:.2f}" for a, d in rounds), flush=True)


if __name__ == "__main__":
    main()
