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


def alternating_times(runs, rounds=11, before=None):
    """``{label: [seconds per round]}``: each of ``runs`` (label -> callable) called once
    untimed, then all of them in turn for ``rounds`` rounds, ``before()`` (if given, untimed)
    ahead of every timed call. Ratios of the same round are what the machine's drift
    affects least."""
    for run in runs.values():
        run()
    times = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            if before is not None:
                before()
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return times
