"""What a fresh output array costs before any kernel writes it.

``python tools/allocation_cost.py [MB ...]``: for arrays of 4 to 64 MB (or the sizes
given, e.g. 151 302 for im2col's float32/float64 results on conv C), the median time of
``np.empty(n).fill(0)`` (a fresh array each time: above glibc's mmap threshold, at most
32 MB, that means page faults and the kernel zeroing the pages) against filling one array
allocated once. Milliseconds, medians of 15.
"""

import sys

import numpy as np

from _timing import median_ms


def main(argv):
    sizes = [float(a) for a in argv] or (4, 8, 16, 24, 32, 48, 64)
    for megabytes in sizes:
        n = int(megabytes * 2**20) // 8
        kept = np.empty(n)
        fresh = median_ms(lambda: np.empty(n).fill(0.0), repeat=15)
        reused = median_ms(lambda: kept.fill(0.0), repeat=15)
        print(f"{megabytes:5g} MB  fresh {fresh:6.2f} ms   reused {reused:6.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
