"""Cost of one parallel kernel launch under the threading layer in use.

``python tools/launch_overhead.py`` (set ``NUMBA_THREADING_LAYER`` to compare layers):
times ``a += 1`` over n float64 elements as a ``prange`` kernel and as a plain loop,
medians of 5 rounds, microseconds per call.
"""

import time

import numpy as np
from numba import njit, prange

import nnkernels  # picks the threading layer the library uses


@njit(parallel=True, nogil=True)
def _add_one_parallel(a):
    for i in prange(a.shape[0]):
        a[i] += 1.0


@njit(nogil=True)
def _add_one_serial(a):
    for i in range(a.shape[0]):
        a[i] += 1.0


def _per_call_us(kernel, a):
    calls = max(10, min(5000, 2_000_000 // max(a.size, 1000)))
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            kernel(a)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(rounds))


def main():
    for n in (2, 1 << 12, 1 << 15, 1 << 17, 1 << 20):
        a = np.zeros(n)
        _add_one_parallel(a)
        _add_one_serial(a)
        parallel = _per_call_us(_add_one_parallel, a)
        serial = _per_call_us(_add_one_serial, a)
        print(f"n={n:>8}  parallel {parallel:8.2f} us  serial {serial:8.2f} us"
              f"  ({nnkernels.threading_layer()})")


if __name__ == "__main__":
    main()
