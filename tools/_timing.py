"""Timing helper shared by the scripts in tools/ (run as ``python tools/<script>.py``)."""

import time

import numpy as np


def median_ms(fn, repeat=9):
    """Median of ``repeat`` timed calls of ``fn`` in milliseconds, after one untimed call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3
