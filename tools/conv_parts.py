"""Sharing a convolution's samples over threads against one part (``split_min_macs``).

``python tools/conv_parts.py float32 [A,B,C,L2,L7,L12]``: for each convolution of
``nnbench.cases``, two layers on the columns + matmul route: "shared" (the default
``split_min_macs``: batches of at least that many multiply-adds are split into one part
per thread) and "one part" (``split_min_macs`` too large to reach: the kernels' and
OpenBLAS's own threads instead), both through ``nnkernels.config_context``. Forward and
backward are timed separately, the two layers alternating call by call
(``nnbench.timing``), 9 rounds; printed: median ms ``forward + backward`` of each.
The fused kernels share samples in their own ``prange`` (``tools/conv_routes.py``).
``--quick``: batches of 4, 2 rounds.
"""

import argparse

import nnkernels
import nnlayers
from nnbench.cases import case_data, cases_of_kind
from nnbench.timing import time_interleaved

ONE_PART = 1 << 62


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/conv_parts.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("shapes", nargs="?", default="A,B,C,L2,L7,L12")
    ap.add_argument("--rounds", type=int, default=None, help="default 9 (2 with --quick)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 9)
    default = nnkernels.get_config()["split_min_macs"]
    table = cases_of_kind("conv", default_only=False)
    for name in args.shapes.split(","):
        case = table[name].scaled(args.quick)
        d = case_data(case, args.dtype)
        calls = {}
        for mode, macs in (("shared", default), ("one part", ONE_PART)):
            layer = nnlayers.Convolution(d["W"], d["b"], case.params["stride"], case.params["pad"])
            settings = dict(conv_route="matmul", split_min_macs=macs)

            def forward(layer=layer, settings=settings):
                with nnkernels.config_context(**settings):
                    layer.forward(d["x"])

            def backward(layer=layer, settings=settings):
                with nnkernels.config_context(**settings):
                    layer.backward(d["dout"])

            # in this order each round: a layer's backward follows its own forward
            calls[mode, "forward"], calls[mode, "backward"] = forward, backward
        timed = time_interleaved(calls, rounds)
        print(
            f"{name:4s} {args.dtype}  "
            + "   ".join(
                f"{mode}: {timed[mode, 'forward'][0] * 1e3:.2f}"
                f" + {timed[mode, 'backward'][0] * 1e3:.2f}"
                for mode in ("shared", "one part")
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
