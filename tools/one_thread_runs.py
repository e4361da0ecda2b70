"""Could the single-threaded twins go? What a small call costs each way.

``python tools/one_thread_runs.py``: microseconds per call (median of 5 timed batches of
2000 calls, the two ways interleaved, ``nnbench.timing``), float32, for ReLU
forward+backward on 4,608 elements and batch norm B (N=100, D=100, ``nnbench.cases``)
forward+backward through the layers, with small inputs run (a) by the twins compiled
without threads (the default) and (b) by the parallel kernels on one thread
(``nnkernels.config_context(parallel_threshold=0, threads=1)``: what dropping the twins
would mean). What the twins cost to compile is in the comparison command's cold probe
(``python -m nnlayers.bench --no-torch --quick``: per kernel, "first" is the twin's
compile on the probe's tiny input, "parallel" the multi-threaded kernel's).
``--quick``: 20 calls per batch.
"""

import argparse

import numpy as np

import nnkernels
import nnlayers
from nnbench.cases import case_data, get_cases
from nnbench.timing import time_interleaved

WAYS = {"twins": {}, "parallel kernels on one thread": {"parallel_threshold": 0, "threads": 1}}


def per_call_us(fn, loops):
    runs = {}
    for way, settings in WAYS.items():

        def run(settings=settings):
            with nnkernels.config_context(**settings):
                for _ in range(loops):
                    fn()

        runs[way] = run
    return {way: med / loops * 1e6 for way, (med, _) in time_interleaved(runs, 5).items()}


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/one_thread_runs.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    loops = 20 if args.quick else 2000
    x = np.random.default_rng(0).standard_normal(4608).astype(np.float32)
    relu = nnlayers.Relu()
    d = case_data(get_cases("bn_b")[0], "float32")
    bn = nnlayers.BatchNormalization(d["gamma"], d["beta"])

    def relu_step():
        relu.backward(relu.forward(x))

    def bn_step():
        bn.backward(bn.forward(d["x"]))

    relu_us, bn_us = per_call_us(relu_step, loops), per_call_us(bn_step, loops)
    for way in WAYS:
        print(
            f"{way:32s} ReLU fwd+bwd {relu_us[way]:6.1f} us   "
            f"batch norm B fwd+bwd {bn_us[way]:6.1f} us",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
