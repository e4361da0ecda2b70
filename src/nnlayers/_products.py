"""Sharing a convolution's samples over threads.

A convolution is a batch of small matrix products (e.g. 32x144 @ 144x196 per sample).
OpenBLAS spreads each product over its threads, which pays off for large products but not
for these: its second thread mostly waits. Instead, each thread here takes a contiguous
share of the samples and runs the whole per-sample pipeline on it (column kernel, products,
folding back) with one BLAS thread and the kernels' single-threaded twins, so the threads
never wait for each other and no thread pool spins while another wants the core.

Every per-sample product and kernel computes exactly what it would with one thread, and
callers reduce over samples after the parts are done, so results do not depend on the
thread count.
"""

import threading

import nnkernels
from nnkernels.threads import single_threaded_blas, single_threaded_kernels

#: below this many multiply-adds a batch runs as one part: starting a thread (50-100 us)
#: would cost more than sharing the work saves
SPLIT_MIN_MACS = 1 << 22


def sample_parts(start, stop, macs):
    """Contiguous ``(lo, hi)`` shares of ``range(start, stop)``, one per thread, or a single
    part when there is one thread, one sample or less than ``SPLIT_MIN_MACS`` of work."""
    n_samples = stop - start
    parts = min(nnkernels.get_num_threads(), n_samples)
    if parts < 2 or macs < SPLIT_MIN_MACS:
        return [(start, stop)]
    return [(start + n_samples * i // parts, start + n_samples * (i + 1) // parts)
            for i in range(parts)]


def run_parts(parts, work):
    """Call ``work(index, lo, hi)`` for every part of ``parts``, each on its own thread.

    With one part, ``work`` runs here with the kernels' and BLAS's own threading. With more,
    OpenBLAS is held at one thread and kernels run single-threaded in every part; if
    OpenBLAS cannot be held (another BLAS), the parts run one after another here. The first
    exception of any part is re-raised after all have finished.
    """
    if len(parts) == 1:
        work(0, *parts[0])
        return
    with single_threaded_blas() as single:
        if not single:  # a BLAS we cannot hold at one thread would be oversubscribed
            for index, (lo, hi) in enumerate(parts):
                work(index, lo, hi)
            return
        errors = []

        def run(index):
            try:
                with single_threaded_kernels():
                    work(index, *parts[index])
            except BaseException as exc:  # re-raised in the calling thread below
                errors.append(exc)

        helpers = [threading.Thread(target=run, args=(index,), daemon=True)
                   for index in range(1, len(parts))]
        for thread in helpers:
            thread.start()
        run(0)
        for thread in helpers:
            thread.join()
    if errors:
        raise errors[0]
