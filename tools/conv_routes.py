"""Convolution route choice: the fused kernels against columns + matmul.

``python tools/conv_routes.py float32 [A,B,C,L2,L7,L12,predict] [--after-reference]``: for
each convolution of ``nnbench.cases`` (conv A/B/C and DeepConvNet's layers 2, 7 and 12),
one layer per route (``nnkernels.config_context(conv_route=...)``): "matmul" (per-sample
columns, ``numpy.matmul`` and col2im, the samples shared over Python threads) and
"kernels" (``nnkernels.conv_forward`` / ``conv_backward``: one kernel each way, calling
NumPy's OpenBLAS per sample). The routes alternate call by call (``nnbench.timing``), 11
rounds; printed: the median ms of each and the median over rounds of kernels/matmul in the
same round. ``--after-reference`` runs the reference layer's forward+backward on the same
shape, untimed, before every timed call, as the comparison command does. ``predict``:
``SimpleConvNet.predict`` on one image (float32, median of 400 calls per route), a
convolution too small to share, where the layer's default is the matmul route.
``--quick``: batches of 4, 2 rounds, 5 predict calls (a smoke test, not a measurement).
"""

import argparse

import numpy as np

import nnkernels
from nnbench.cases import build_contenders, build_network, cases_of_kind
from nnbench.timing import median_ratio, time_interleaved

ROUTES = ("matmul", "kernels")


def under(settings, fn):
    """``fn`` called inside ``nnkernels.config_context(**settings)``."""

    def run():
        with nnkernels.config_context(**settings):
            return fn()

    return run


def predict_one_image(calls):
    net = build_network("simple", "nnlayers", np.float32)
    x = np.random.default_rng(1).random((1, 1, 28, 28)).astype(np.float32)
    runs = {route: under({"conv_route": route}, lambda: net.predict(x)) for route in ROUTES}
    timed = time_interleaved(runs, calls)
    print(
        f"SimpleConvNet.predict, one image, float32, threading layer "
        f"{nnkernels.threading_layer()}: "
        + ", ".join(f"{route} {timed[route][0] * 1e6:.0f} us" for route in ROUTES),
        flush=True,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/conv_routes.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("shapes", nargs="?", default="A,B,C,L2,L7,L12,predict")
    ap.add_argument("--after-reference", action="store_true")
    ap.add_argument("--rounds", type=int, default=None, help="default 11 (2 with --quick)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if not nnkernels.conv_kernels_available():
        print("the fused kernels are unavailable here (NumPy's BLAS is not its OpenBLAS)")
        return 0
    rounds = args.rounds or (2 if args.quick else 11)
    table = cases_of_kind("conv", default_only=False)
    for name in args.shapes.split(","):
        if name == "predict":
            predict_one_image(5 if args.quick else 400)
            continue
        case = table[name].scaled(args.quick)
        runs = {
            route: under(
                {"conv_route": route}, build_contenders(case, args.dtype, ("nnlayers",))["nnlayers"]
            )
            for route in ROUTES
        }
        before = None
        if args.after_reference:
            reference = build_contenders(case, args.dtype, ("reference",))["reference"]

            def before(_, reference=reference):
                reference()

        timed = time_interleaved(runs, rounds, before=before)
        ratio = median_ratio(timed["kernels"][1], timed["matmul"][1])
        note = " after the reference" if args.after_reference else ""
        print(
            f"{name:4s} {args.dtype}{note}: matmul {timed['matmul'][0] * 1e3:.2f} ms, "
            f"kernels {timed['kernels'][0] * 1e3:.2f} ms, kernels/matmul {ratio:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
