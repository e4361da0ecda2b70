"""The pieces of a Convolution forward+backward on the columns + matmul route, each timed
alone.

``python tools/profile_conv.py float32 [book|deep]``: ``book`` is conv A/B/C of
``nnbench.cases``, ``deep`` DeepConvNet's layers 2, 7 and 12. Each piece runs on reused
buffers; medians of 9 (``nnbench.timing``) in ms. ``dW`` is the orientation the layer uses
(``cols[n] @ dout[n].T``); ``dW_einsum`` and ``dW_other_order`` (``dout[n] @ cols[n].T``)
are the alternatives it was chosen over (not in the total). ``--quick``: batch of 4, 2
calls.
"""

import argparse

import numpy as np

import nnkernels
from nnbench.cases import case_data, cases_of_kind
from nnbench.timing import median_seconds

SETS = {"book": ("A", "B", "C"), "deep": ("L2", "L7", "L12")}


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/profile_conv.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("set", nargs="?", default="book", choices=list(SETS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    repeat = 2 if args.quick else 9
    table = cases_of_kind("conv", default_only=False)

    def ms(fn):
        return median_seconds(fn, repeat) * 1e3

    for name in SETS[args.set]:
        case = table[name].scaled(args.quick)
        d = case_data(case, args.dtype)
        x, fn = d["x"], case.params["filters"]
        (fh, fw), s, p = case.params["filter"], case.params["stride"], case.params["pad"]
        weights = d["W"].reshape(fn, -1)
        cols = nnkernels.im2col_per_sample(x, fh, fw, s, p)
        dout = d["dout"].reshape(x.shape[0], fn, -1)
        out = np.empty_like(dout)
        dcols = np.empty_like(cols)
        dx = np.empty_like(x)
        r = {
            "im2col": ms(lambda: nnkernels.im2col_per_sample(x, fh, fw, s, p, out=cols)),
            "fwd_gemm": ms(lambda: np.matmul(weights, cols, out=out)),
            "dW": ms(lambda: np.matmul(cols, dout.transpose(0, 2, 1)).sum(0)),
            "dcol_gemm": ms(lambda: np.matmul(weights.T, dout, out=dcols)),
            "col2im": ms(lambda: nnkernels.col2im_per_sample(dcols, x.shape, fh, fw, s, p, out=dx)),
            "db": ms(lambda: dout.sum(axis=(0, 2))),
        }
        total = sum(r.values())
        r["dW_einsum"] = ms(lambda: np.einsum("nfp,nkp->fk", dout, cols, optimize=True))
        r["dW_other_order"] = ms(lambda: np.matmul(dout, cols.transpose(0, 2, 1)).sum(0))
        print(
            name,
            args.dtype,
            "  ".join(f"{k}={v:.2f}" for k, v in r.items()),
            f"total={total:.1f}ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
