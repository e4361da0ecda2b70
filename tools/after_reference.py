"""How much of a layer's time in the comparison comes from what ran just before it.

``python tools/after_reference.py float32 conv_b``: the ``nnbench.cases`` case's
forward+backward for nnlayers and (if installed) PyTorch, median ms of 11 calls
(``nnbench.timing``), each call preceded (untimed) by: nothing (back to back), the
reference's forward+backward (what the comparison command interleaves), writing 200 MB,
allocating and dropping four 50 MB arrays, or a 20 ms sleep. ``--quick``: batch of 4, 2
calls, 8 MB written.
"""

import argparse
import time

import numpy as np

import nnkernels
from nnbench.cases import build_contenders, get_cases, torch_available
from nnbench.timing import time_interleaved


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/after_reference.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("case", nargs="?", default="conv_b")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    case = get_cases(args.case)[0].scaled(args.quick)
    contenders = ("reference", "nnlayers") + (("torch",) if torch_available() else ())
    if "torch" in contenders:
        import torch

        torch.set_num_threads(nnkernels.get_num_threads())
    calls = build_contenders(case, args.dtype, contenders)
    reference = calls.pop("reference")
    megabytes = 8 if args.quick else 200
    big = np.ones((megabytes << 20) // 8)
    before = {
        "nothing": lambda: None,
        "reference": reference,
        f"write {megabytes} MB": lambda: big.fill(1.0),
        f"4 x {megabytes // 4} MB arrays": lambda: [
            np.ones((megabytes << 18) // 8) for _ in range(4)
        ],
        "sleep 20 ms": lambda: time.sleep(0.02),
    }
    repeat = 2 if args.quick else 11
    for name, call in calls.items():
        if call is None:
            continue
        cells = []
        for label, pre in before.items():
            med = time_interleaved({name: call}, repeat, before=lambda _, pre=pre: pre())[name][0]
            cells.append(f"{label} {med * 1e3:.2f}")
        print(f"{case.name} {args.dtype} {name:8s} after: " + ", ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
