"""Peak array memory of a convolution's forward+backward (tracemalloc), nnlayers vs the
reference, per route and workspace setting.

``python tools/conv_memory.py [C]``: MiB for float32 and float64 on conv C (or the
``nnbench.cases`` convolution named): the layer through the fused kernels (where
available), then through columns and ``numpy.matmul`` with the default (automatic)
workspace setting, with the whole column matrix kept (``workspace_limit=1 << 62``) and
under a 16 MiB bound, all through ``nnkernels.config_context``. A fresh layer is built
inside each measured call, so the buffers a layer keeps are counted. ``--quick``: batch
of 4.
"""

import argparse
import tracemalloc

import nnkernels
import nnlayers
from nnbench.cases import case_data, cases_of_kind
from nnlayers import reference


def peak_mib(module, case, d, settings=None):
    def step():
        with nnkernels.config_context(**(settings or {})):
            layer = module.Convolution(d["W"], d["b"], case.params["stride"], case.params["pad"])
            layer.forward(d["x"])
            layer.backward(d["dout"])

    step()  # compile first
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        step()
        return (tracemalloc.get_traced_memory()[1] - before) / 2**20
    finally:
        tracemalloc.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/conv_memory.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("shape", nargs="?", default="C")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    case = cases_of_kind("conv", default_only=False)[args.shape].scaled(args.quick)
    for dtype in ("float32", "float64"):
        d = case_data(case, dtype)
        ours = {}
        if nnkernels.conv_kernels_available():
            ours["fused kernels"] = peak_mib(nnlayers, case, d, {"conv_route": "kernels"})
        for label, bound in (("default", None), ("whole", 1 << 62), ("16 MiB bound", 16 << 20)):
            ours[f"matmul route {label}"] = peak_mib(
                nnlayers, case, d, {"conv_route": "matmul", "workspace_limit": bound}
            )
        print(
            f"{args.shape} {dtype}: reference {peak_mib(reference, case, d):.0f} MiB, nnlayers "
            + ", ".join(f"{label} {mib:.0f} MiB" for label, mib in ours.items()),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
