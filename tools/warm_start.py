"""Warm start above Numba's own: import + the first SimpleConvNet step, against a fresh
process that imports Numba and calls one trivial cached ``njit`` function.

``python tools/warm_start.py``: warms both JIT caches once, then alternates ``--rounds``
pairs of fresh processes (baseline, then the library's first float32 training step of
batch 100 with Adam) and prints each one's wall time as the parent sees it (interpreter
start-up included, the same for both), their medians, and the median over the rounds of
the difference. ``--quick``: 2 rounds (a smoke test).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from nnbench.scripts import FIRST_STEP, NUMBA_ONE_FUNCTION


def _wall(path):
    start = time.perf_counter()
    subprocess.run([sys.executable, path], check=True)
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/warm_start.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="warm_start_") as tmp:
        paths = {}
        for name, code in (
            ("baseline", NUMBA_ONE_FUNCTION),
            ("first step", FIRST_STEP.format(dtype="float32")),
        ):
            paths[name] = os.path.join(tmp, name.replace(" ", "_") + ".py")
            with open(paths[name], "w") as f:
                f.write(code)
            _wall(paths[name])  # fills the JIT caches
        times = {name: [] for name in paths}
        for _ in range(rounds):
            for name, path in paths.items():
                times[name].append(_wall(path))
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:<11} median {statistics.median(values):.3f} s   ({shown})")
    above = statistics.median(b - a for a, b in zip(times["baseline"], times["first step"]))
    print(f"above Numba's own start: median {above:.3f} s over {rounds} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
