"""Convolution workspace: columns kept whole against processed in chunks.

``python tools/conv_chunking.py float32 [A,B,C,L2,L7,L12] [8192,16384] [--after-reference]``:
for each convolution of ``nnbench.cases``, one layer per setting of
``nnkernels.config_context(workspace_limit=...)`` on the columns + matmul route (the fused
kernels never hold a batch's columns, so the bound does not concern them): "whole" (a
bound too large to bind: the batch's column matrix is written in forward and read back in
backward), "default" (``None``: matrices above ``nnkernels.config.AUTO_CHUNK_ABOVE`` are
chunked as under ``AUTO_WORKSPACE``) and each bound given in KiB (``-`` for none): chunks
through small per-thread buffers, columns recomputed in backward. ``--after-reference``
runs the reference layer's forward+backward, untimed, before every timed call, as the
comparison command does. The settings alternate call by call (``nnbench.timing``), 11
rounds; printed: the median ms of each and, in brackets, the median over rounds of its
time divided by "whole"'s in the same round. ``--quick``: batches of 4, 2 rounds.
"""

import argparse

import numpy as np

import nnkernels
from nnbench.cases import build_contenders, cases_of_kind
from nnbench.timing import median_ratio, time_interleaved

WHOLE = 1 << 62


def column_mib(case, dtype):
    n, c, h, w = case.shape
    fh, fw = case.params["filter"]
    stride, pad = case.params["stride"], case.params["pad"]
    out = ((h + 2 * pad - fh) // stride + 1) * ((w + 2 * pad - fw) // stride + 1)
    return n * c * fh * fw * out * np.dtype(dtype).itemsize / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/conv_chunking.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("shapes", nargs="?", default="A,B,C,L2,L7,L12")
    ap.add_argument("bounds", nargs="?", default="8192,16384", help="KiB, comma list, or -")
    ap.add_argument("--after-reference", action="store_true")
    ap.add_argument("--rounds", type=int, default=None, help="default 11 (2 with --quick)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 11)
    bounds = [] if args.bounds == "-" else [int(kib) << 10 for kib in args.bounds.split(",")]
    settings = {"whole": WHOLE, "default": None, **{f"{b >> 10} KiB": b for b in bounds}}
    table = cases_of_kind("conv", default_only=False)
    for name in args.shapes.split(","):
        case = table[name].scaled(args.quick)
        runs = {}
        for label, bound in settings.items():
            run = build_contenders(case, args.dtype, ("nnlayers",))["nnlayers"]

            def bounded(run=run, bound=bound):
                with nnkernels.config_context(conv_route="matmul", workspace_limit=bound):
                    run()

            runs[label] = bounded
        before = None
        if args.after_reference:
            reference = build_contenders(case, args.dtype, ("reference",))["reference"]

            def before(_, reference=reference):
                reference()

        timed = time_interleaved(runs, rounds, before=before)
        whole = timed["whole"][1]
        cells = [
            f"{label} {med * 1e3:.2f}"
            + ("" if label == "whole" else f" ({median_ratio(times, whole):.2f})")
            for label, (med, times) in timed.items()
        ]
        note = " after the reference" if args.after_reference else ""
        print(
            f"{name:4s} {args.dtype}{note} columns {column_mib(case, args.dtype):5.1f} MiB  "
            + "   ".join(cells),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
