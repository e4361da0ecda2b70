"""What a fresh output array costs before any kernel writes it.

``python tools/allocation_cost.py [MB ...]``: for arrays of 4 to 64 MB (or the sizes
given, e.g. 151 302 for im2col's float32/float64 results on conv C), the median time of
``np.empty(n).fill(0)`` (a fresh array each time: above glibc's mmap threshold, at most
32 MB, that means page faults and the kernel zeroing the pages) against filling one array
allocated once; then the same with every Numba thread writing its share (a ``prange``
fill), the floor for any kernel that returns a fresh array of that size. Milliseconds,
medians of 15.
"""

import sys

import numba
import numpy as np
from numba import njit, prange

from _timing import median_ms


@njit(parallel=True)  # (not cached: it reads the thread count at run time)
def _threaded_fill(a, value):
    n = a.shape[0]
    parts = numba.get_num_threads()
    for part in prange(parts):
        for i in range(part * n // parts, (part + 1) * n // parts):
            a[i] = value


def main(argv):
    sizes = [float(a) for a in argv] or (4, 8, 16, 24, 32, 48, 64)
    threads = numba.get_num_threads()
    _threaded_fill(np.empty(8), 0.0)  # compile outside the timing
    for megabytes in sizes:
        n = int(megabytes * 2**20) // 8
        kept = np.empty(n)
        fresh = median_ms(lambda: np.empty(n).fill(0.0), repeat=15)
        reused = median_ms(lambda: kept.fill(0.0), repeat=15)
        fresh_t = median_ms(lambda: _threaded_fill(np.empty(n), 0.0), repeat=15)
        reused_t = median_ms(lambda: _threaded_fill(kept, 0.0), repeat=15)
        print(f"{megabytes:5g} MB  fresh {fresh:6.2f} ms   reused {reused:6.2f} ms   "
              f"{threads} threads: fresh {fresh_t:6.2f} ms   reused {reused_t:6.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
