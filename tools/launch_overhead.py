"""Cost of one parallel kernel launch under the threading layer in use.

``python tools/launch_overhead.py`` (set ``NUMBA_THREADING_LAYER`` to compare layers):
times ``a += 1`` over n float64 elements as a ``prange`` kernel and as a plain loop,
microseconds per call, the median of 5 timed batches of calls (``nnbench.timing``).
``--quick``: 2 sizes, small batches.
"""

import argparse

import numpy as np
from numba import njit, prange

import nnkernels
from nnbench.timing import time_interleaved


@njit(parallel=True, nogil=True)
def _add_one_parallel(a):
    for i in prange(a.shape[0]):
        a[i] += 1.0


@njit(nogil=True)
def _add_one_serial(a):
    for i in range(a.shape[0]):
        a[i] += 1.0


def _batch(kernel, a, calls):
    def run():
        for _ in range(calls):
            kernel(a)

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/launch_overhead.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes = (2, 1 << 15) if args.quick else (2, 1 << 12, 1 << 15, 1 << 17, 1 << 20)
    for n in sizes:
        a = np.zeros(n)
        calls = 10 if args.quick else max(10, min(5000, 2_000_000 // max(a.size, 1000)))
        timed = time_interleaved(
            {
                "parallel": _batch(_add_one_parallel, a, calls),
                "serial": _batch(_add_one_serial, a, calls),
            },
            repeat=5,
        )
        parallel, serial = (timed[k][0] / calls * 1e6 for k in ("parallel", "serial"))
        print(
            f"n={n:>8}  parallel {parallel:8.2f} us  serial {serial:8.2f} us"
            f"  ({nnkernels.threading_layer()})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
