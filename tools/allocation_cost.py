"""What a fresh output array costs before any kernel writes it.

``python tools/allocation_cost.py``: for arrays of 4 to 64 MB, the median time of
``np.empty(n).fill(0)`` (a fresh array each time: above glibc's mmap threshold, at most
32 MB, that means page faults and the kernel zeroing the pages) against filling one array
allocated once. Milliseconds, medians of 15.
"""

import numpy as np

from _timing import median_ms


def main():
    for megabytes in (4, 8, 16, 24, 32, 48, 64):
        n = megabytes * 2**20 // 8
        kept = np.empty(n)
        fresh = median_ms(lambda: np.empty(n).fill(0.0), repeat=15)
        reused = median_ms(lambda: kept.fill(0.0), repeat=15)
        print(f"{megabytes:3d} MB  fresh {fresh:6.2f} ms   reused {reused:6.2f} ms")


if __name__ == "__main__":
    main()
