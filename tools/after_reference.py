"""How much of a layer's time in the benchmark comes from what ran just before it.

``python tools/after_reference.py float32 conv_b``: the benchmark case's forward+backward
for nnlayers and (if installed) PyTorch, median ms of 11 calls, each call preceded by:
nothing (back to back), the reference's forward+backward (what ``python -m nnlayers.bench``
interleaves), writing 200 MB, allocating and dropping four 50 MB arrays, or a 20 ms sleep.
"""

import statistics
import sys
import time

import numpy as np

from nnlayers._bench_cases import build_contenders, get_cases, torch_available


def main():
    dtype = sys.argv[1] if len(sys.argv) > 1 else "float32"
    case = get_cases(sys.argv[2] if len(sys.argv) > 2 else "conv_b")[0]
    contenders = ("reference", "nnlayers") + (("torch",) if torch_available() else ())
    if "torch" in contenders:
        import torch

        import nnkernels

        torch.set_num_threads(nnkernels.get_num_threads())
    calls = build_contenders(case, dtype, contenders)
    reference = calls.pop("reference")
    big = np.ones(25 << 20)  # 200 MB
    before = {"nothing": lambda: None, "reference": reference,
              "write 200 MB": lambda: big.fill(1.0),
              "4 x 50 MB arrays": lambda: [np.ones(50 << 17) for _ in range(4)],
              "sleep 20 ms": lambda: time.sleep(0.02)}
    reference()
    for call in calls.values():
        call()
    for name, call in calls.items():
        cells = []
        for label, pre in before.items():
            times = []
            for _ in range(11):
                pre()
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            cells.append(f"{label} {statistics.median(times) * 1e3:.2f}")
        print(f"{case.name} {dtype} {name:8s} after: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
