"""Trials per minute of ``nntrain sweep`` with 1 and 2 single-threaded local workers, and
with the same trials run one after another in one process with 2 threads.

    python tools/sweep_throughput.py [--trials 20] [--rounds 1] [extra nntrain sweep options]
    python tools/sweep_throughput.py --quick   # smoke run: 2 tiny trials per mode

Every mode samples the same trials (random sampler, same seed, fresh study). Printed per
mode: wall time of the sweep loop (from the first trial asked to the last told: starting
the cluster, the workers' warm-up that overlaps opening the study, and stopping the
cluster excluded; the whole command's time is printed as "process"), trials per minute,
the sum of the trials' training seconds, and the overhead: worker time in the loop not
spent training (set-up inside trials, scheduling, transfers, recording results, idle
workers at the end) as a share of training time. Default trials: the book preset's
network and data on digits with 20 epochs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT = ["--preset", "book", "--dataset", "digits", "--epochs", "20"]
QUICK = [
    "--dataset",
    "digits",
    "--digits-size",
    "8",
    "--epochs",
    "1",
    "--param",
    "lr=log:1e-3:1e-1",
]
MODES = (
    ("1 worker", ["--workers", "1"], 1),
    ("2 workers", ["--workers", "2"], 2),
    ("1 process, 2 threads", ["--workers", "0", "--threads", "2"], 1),
)


def run(mode_args, trials, extra, out):
    command = [
        sys.executable,
        "-m",
        "nntrain",
        "sweep",
        "--out",
        out,
        "--trials",
        str(trials),
        "--sampler",
        "random",
        *extra,
        *mode_args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = next(
        float(line.split()[3])
        for line in result.stdout.splitlines()
        if line.startswith("sweep finished in")
    )
    with open(os.path.join(out, "results.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return wall, records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the modes this many times, one after another, and report the median "
        "of each round's ratios",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 one-epoch trials on 8x8 digits per mode (a smoke test)",
    )
    args, extra = parser.parse_known_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.quick:
        args.trials, extra = 2, QUICK + extra
    extra = extra or DEFAULT
    print(
        f"nntrain sweep {' '.join(extra)} --trials {args.trials}; load average before: "
        f"{os.getloadavg()[0]:.2f}"
    )
    ratios = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {number}")
        ratios.append(run_round(args.trials, extra))
    if args.rounds > 1:
        one, threads = zip(*ratios)
        print(
            f"median of {args.rounds} rounds: 2 workers / 1 worker "
            f"{statistics.median(one):.2f}x; 2 workers / 1 process with 2 threads "
            f"{statistics.median(threads):.2f}x"
        )


def run_round(trials, extra):
    """Run every mode once; print and return the round's two ratios."""
    rates = {}
    for name, mode_args, workers in MODES:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            wall, records = run(mode_args, trials, extra, out)
            total = time.perf_counter() - start
        setup = sum(r.get("setup_seconds", 0.0) for r in records)
        training = sum(r["seconds"] for r in records) - setup
        overhead = (workers * wall - training) / training
        rates[name] = 60 * trials / wall
        print(
            f"{name:<22} sweep {wall:7.1f} s (process {total:6.1f} s)  "
            f"{rates[name]:6.1f} trials/min  training {training:7.1f} s  "
            f"overhead {100 * overhead:5.1f}% (of which set-up inside trials "
            f"{100 * setup / training:4.1f}%)",
            flush=True,
        )
    one = rates["2 workers"] / rates["1 worker"]
    threads = rates["2 workers"] / rates["1 process, 2 threads"]
    print(
        f"2 workers / 1 worker: {one:.2f}x; 2 workers / 1 process with 2 threads: "
        f"{threads:.2f}x; load average after: {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return one, threads


if __name__ == "__main__":
    main()
