"""The one timer of the benchmarks: contenders interleaved, warm-up by count and by time,
medians.

Every timing in :mod:`nnbench`, the asv suite and ``tools/`` goes through
:func:`time_interleaved`. Contenders are called in turn (A B C A B C ...), so a drift of
the machine's speed touches all of them alike; ratios taken within one round
(:func:`median_ratio`) are steadier still. On a shared machine compare ratios from one run,
not absolute times across runs.
"""

import gc
import statistics
import time

__all__ = ["MAX_WARMUP_ROUNDS", "median_ratio", "median_seconds", "time_interleaved"]

#: untimed rounds at most spent reaching ``warmup_time``
MAX_WARMUP_ROUNDS = 10000


def time_interleaved(contenders, repeat, warmup=1, warmup_time=0.0, before=None):
    """Median seconds per call of each callable in ``contenders`` (a dict name -> callable).

    Every callable is called ``warmup`` times untimed, then in turn, untimed, until each
    has spent at least ``warmup_time`` seconds so (as asv's ``warmup_time``: a call of tens
    of microseconds takes many calls to reach its steady speed, a call of a second none),
    then ``repeat`` rounds call them in turn (A B C A B C ...), each call timed with
    ``time.perf_counter`` with the garbage collector paused. ``before(name)``, if given,
    runs untimed ahead of every call (warm-up and timed): to prepare a contender's input,
    or to put the caches in a given state (e.g. run the reference first).

    Returns ``{name: (median, [times])}``.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")

    def call(name):
        if before is not None:
            before(name)
        contenders[name]()

    for _ in range(warmup):
        for name in contenders:
            call(name)
    spent = dict.fromkeys(contenders, 0.0)
    for _ in range(MAX_WARMUP_ROUNDS if warmup_time > 0 else 0):
        pending = [name for name in contenders if spent[name] < warmup_time]
        if not pending:
            break
        for name in pending:
            if before is not None:
                before(name)
            t = time.perf_counter()
            contenders[name]()
            spent[name] += time.perf_counter() - t
    times = {name: [] for name in contenders}
    gc.collect()
    for _ in range(repeat):
        for name, fn in contenders.items():
            if before is not None:
                before(name)
            gc.disable()
            try:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            finally:
                gc.enable()
    return {name: (statistics.median(ts), ts) for name, ts in times.items()}


def median_seconds(fn, repeat=9, warmup=1):
    """Median seconds of ``repeat`` timed calls of ``fn`` alone, after ``warmup`` untimed."""
    return time_interleaved({"fn": fn}, repeat, warmup)["fn"][0]


def median_ratio(numerator, denominator):
    """Median over rounds of ``numerator[i] / denominator[i]`` (two lists of times from one
    :func:`time_interleaved` run): what the machine's drift affects least."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))
