"""The fused convolution kernels: Python threads over chunks of samples against ``prange``.

``python tools/conv_threads_vs_prange.py float32 [A,B,C,L2,L7,L12]``: for each convolution
of ``nnbench.cases``, forward then backward (columns not kept) run two ways on the same
arrays: "threads", the library's kernels (``nnkernels.convolution``: one single-threaded,
GIL-free kernel call per chunk of samples, the chunks taken in turn by every thread), and
"prange", the same loop bodies compiled here as one ``prange`` kernel over the threads'
shares of the samples. The two alternate call by call (``nnbench.timing``), 21 rounds (5
for conv C); printed: each one's median ms and the median over rounds of threads/prange.
The results are checked to be the same bits first.

``--compile``: instead, in a fresh interpreter each with an empty Numba cache, the seconds
the first forward+backward call of each version takes on a tiny input, float32 (almost
all of it compiling the kernels and the column code they call).

``--quick``: batches of 4, 2 rounds (a smoke test, not a measurement).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from numba import njit, prange

from nnbench.cases import cases_of_kind
from nnbench.timing import median_ratio, time_interleaved
from nnkernels import convolution
from nnkernels._blas import NO_TRANS, TRANS, gemm
from nnkernels.columns import _fold_plane, _unfold_plane, conv_output_shape
from nnkernels.threads import get_num_threads, single_threaded_blas


@njit(parallel=True, nogil=True, error_model="numpy")
def _forward_prange(x, weights, bias, fh, fw, stride, pad, out_h, out_w, n_parts, cols, out):
    n_img, channels, height, width = x.shape
    n_filters, k = weights.shape
    n_out = out_h * out_w
    xf = x.reshape(-1)
    for part_index in prange(n_parts):
        part = np.int64(part_index)
        for n in range(n_img * part // n_parts, n_img * (part + 1) // n_parts):
            sample_cols = cols[part]
            cf = sample_cols.reshape(-1)
            for c in range(channels):
                _unfold_plane(
                    xf, (n * channels + c) * height * width, cf, c * fh * fw * n_out,
                    fh, fw, stride, pad, height, width, out_h, out_w,
                )  # fmt: skip
            result = out[n]
            gemm(NO_TRANS, NO_TRANS, n_filters, n_out, k, weights, k, sample_cols, n_out,
                 result, n_out)  # fmt: skip
            for f in range(n_filters):
                for p in range(n_out):
                    result[f, p] += bias[f]


@njit(parallel=True, nogil=True, error_model="numpy")
def _backward_prange(x, weights, dout, fh, fw, stride, pad, out_h, out_w, n_parts, cols, dcols,
                     dw, dx):  # fmt: skip
    n_img, channels, height, width = x.shape
    n_filters, k = weights.shape
    n_out = out_h * out_w
    xf = x.reshape(-1)
    gf = dx.reshape(-1)
    for part_index in prange(n_parts):
        part = np.int64(part_index)
        sample_cols, grad_cols = cols[part], dcols[part]
        cf, gcf = sample_cols.reshape(-1), grad_cols.reshape(-1)
        for n in range(n_img * part // n_parts, n_img * (part + 1) // n_parts):
            for c in range(channels):
                _unfold_plane(
                    xf, (n * channels + c) * height * width, cf, c * fh * fw * n_out,
                    fh, fw, stride, pad, height, width, out_h, out_w,
                )  # fmt: skip
            d = dout[n]
            gemm(NO_TRANS, TRANS, k, n_filters, n_out, sample_cols, n_out, d, n_out, dw[n],
                 n_filters)  # fmt: skip
            gemm(TRANS, NO_TRANS, k, n_out, n_filters, weights, k, d, n_out, grad_cols, n_out)
            for c in range(channels):
                _fold_plane(
                    gcf, c * fh * fw * n_out, gf, (n * channels + c) * height * width,
                    fh, fw, stride, pad, height, width, out_h, out_w,
                )  # fmt: skip


def contenders(case, dtype):
    """``{"threads": run, "prange": run}``, each a forward+backward returning its arrays."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.shape).astype(dtype)
    n_img, channels = case.shape[:2]
    fn, (fh, fw) = case.params["filters"], case.params["filter"]
    stride, pad = case.params["stride"], case.params["pad"]
    weights = (0.1 * rng.standard_normal((fn, channels * fh * fw))).astype(dtype)
    bias = rng.standard_normal(fn).astype(dtype)
    out_h, out_w = conv_output_shape(x.shape, fh, fw, stride, pad)
    geometry = (fh, fw, stride, pad, out_h, out_w)
    k, n_out = weights.shape[1], out_h * out_w
    parts = max(1, min(get_num_threads(), n_img))
    if not convolution.conv_kernels_available():  # also loads the BLAS into LLVM
        raise RuntimeError("the fused convolution kernels need NumPy's OpenBLAS wheel build")

    def arrays():
        return (
            np.empty((n_img, fn, n_out), dtype),
            np.empty((parts, k, n_out), dtype),
            np.empty((parts, k, n_out), dtype),
            np.empty((n_img, k, fn), dtype),
            np.empty(x.shape, dtype),
        )

    def threads():
        out, cols, dcols, dw, dx = arrays()
        with single_threaded_blas():
            convolution._run_in_chunks(
                n_img,
                parts,
                lambda part, lo, hi: convolution._conv_forward_kernel(
                    x, weights, bias, *geometry, lo, hi, part, False, cols, out
                ),
            )
            convolution._run_in_chunks(
                n_img,
                parts,
                lambda part, lo, hi: convolution._conv_backward_kernel(
                    x, weights, out, *geometry, lo, hi, part, False, cols, dcols, dw, dx
                ),
            )
        return out, dw, dx

    def prange_kernels():
        out, cols, dcols, dw, dx = arrays()
        with single_threaded_blas():
            _forward_prange(x, weights, bias, *geometry, parts, cols, out)
            _backward_prange(x, weights, out, *geometry, parts, cols, dcols, dw, dx)
        return out, dw, dx

    return {"threads": threads, "prange": prange_kernels}


COMPILE_ONE = """
import time, numpy as np, sys
sys.path.insert(0, {tools!r})
from conv_threads_vs_prange import contenders
from nnbench.cases import cases_of_kind
case = cases_of_kind("conv")["A"].scaled(True)
start = time.perf_counter()
run = contenders(case, np.float32)[{name!r}]
run()
print(f"{{time.perf_counter() - start:.2f}}")
"""


def compile_times():
    for name in ("threads", "prange"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            code = COMPILE_ONE.format(tools=os.path.dirname(os.path.abspath(__file__)), name=name)
            result = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            print(f"{name}: first forward+backward, empty cache, {result.stdout.strip()} s")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/conv_threads_vs_prange.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("shapes", nargs="?", default="A,B,C,L2,L7,L12")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if not convolution.conv_kernels_available():
        print("the fused convolution kernels are not available here (NumPy's BLAS)")
        return 0
    if args.compile:
        compile_times()
        return 0
    cases = cases_of_kind("conv", default_only=False)
    for short in args.shapes.split(","):
        case = cases[short].scaled(args.quick)
        runs = contenders(case, np.dtype(args.dtype))
        first = {name: run() for name, run in runs.items()}
        for a, b in zip(first["threads"], first["prange"]):
            np.testing.assert_array_equal(a, b)
        rounds = 2 if args.quick else (5 if short == "C" else 21)
        timed = time_interleaved(runs, rounds)
        ratio = median_ratio(timed["threads"][1], timed["prange"][1])
        print(
            f"{args.dtype} conv {short}: threads {timed['threads'][0] * 1e3:.2f} ms, "
            f"prange {timed['prange'][0] * 1e3:.2f} ms, threads/prange {ratio:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
