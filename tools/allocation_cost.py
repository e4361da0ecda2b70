"""The floor of a function returning a fresh array: what the array costs before any kernel
writes it.

``python tools/allocation_cost.py [MB ...]``: for arrays of 4 to 64 MB (or the sizes
given, e.g. 151 302 for im2col's float32/float64 results on conv C), the median time of
``np.empty(n).fill(0)`` (a fresh array each time: above glibc's mmap threshold, at most
32 MB, that means page faults and the kernel zeroing the pages) against filling one array
allocated once; then the same with every Numba thread writing its share (a ``prange``
fill). Milliseconds, medians of 15 (``nnbench.timing``). ``--quick``: 1 and 4 MB, 2 calls.
"""

import argparse

import numba
import numpy as np
from numba import njit, prange

from nnbench.timing import median_seconds


@njit(parallel=True)  # (not cached: it reads the thread count at run time)
def threaded_fill(a, value):
    """Fill ``a`` (1-D) with ``value``, every Numba thread writing an equal share."""
    n = a.shape[0]
    parts = numba.get_num_threads()
    for part in prange(parts):
        for i in range(part * n // parts, (part + 1) * n // parts):
            a[i] = value


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/allocation_cost.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("sizes", nargs="*", type=float, help="MB (default 4 8 16 24 32 48 64)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes = args.sizes or ((1, 4) if args.quick else (4, 8, 16, 24, 32, 48, 64))
    repeat = 2 if args.quick else 15
    threads = numba.get_num_threads()
    threaded_fill(np.empty(8), 0.0)  # compile outside the timing

    def ms(fn):
        return median_seconds(fn, repeat) * 1e3

    for megabytes in sizes:
        n = int(megabytes * 2**20) // 8
        kept = np.empty(n)
        fresh = ms(lambda: np.empty(n).fill(0.0))
        reused = ms(lambda: kept.fill(0.0))
        fresh_t = ms(lambda: threaded_fill(np.empty(n), 0.0))
        reused_t = ms(lambda: threaded_fill(kept, 0.0))
        print(
            f"{megabytes:5g} MB  fresh {fresh:6.2f} ms   reused {reused:6.2f} ms   "
            f"{threads} threads: fresh {fresh_t:6.2f} ms   reused {reused_t:6.2f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
