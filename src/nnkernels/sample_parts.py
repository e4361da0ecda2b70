"""Sharing a batch's samples over Python threads, for the columns + ``numpy.matmul`` route.

A convolution is a batch of small matrix products (e.g. ``32x144 @ 144x196`` per sample).
OpenBLAS spreads each product over its threads, which pays off for large products but not
for these: its second thread mostly waits. Instead each thread here takes a contiguous share
of the samples and runs the whole per-sample pipeline on it (column kernel, products, folding
back) with one BLAS thread and the kernels' single-threaded twins.

Every per-sample product and kernel computes exactly what it would with one thread, and
callers reduce over samples after the parts are done, so results do not depend on the
thread count.
"""

import threading

from . import config
from ._jit import serial_in_this_thread
from .threads import get_num_threads, single_threaded_blas

__all__ = ["sample_parts", "run_parts"]


def sample_parts(start, stop, macs):
    """Contiguous ``(lo, hi)`` shares of ``range(start, stop)``, one per thread.

    A single part when there is one thread, one sample, or fewer than the
    ``split_min_macs`` setting's multiply-adds of work.

    Parameters
    ----------
    start, stop : int
        The samples to share.
    macs : int
        Multiply-adds of the whole work, for deciding whether sharing pays.
    """
    n_samples = stop - start
    parts = min(get_num_threads(), n_samples)
    if parts < 2 or macs < config.get("split_min_macs"):
        return [(start, stop)]
    return [
        (start + n_samples * i // parts, start + n_samples * (i + 1) // parts) for i in range(parts)
    ]


def _join_all(threads):
    """Join every thread even if this one is interrupted meanwhile; then re-raise that."""
    interrupted = None
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join()
            except BaseException as exc:  # noqa: BLE001 - re-raised once all are done
                interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


def run_parts(parts, work):
    """Call ``work(index, lo, hi, stop)`` for every part, each on its own thread.

    ``stop`` is a :class:`threading.Event` set when any part failed or the calling thread was
    interrupted; ``work`` should check it between chunks and return early. This function
    returns, or raises the first exception (``KeyboardInterrupt`` included), only once every
    helper thread has finished, so no thread is still writing into the caller's arrays.

    With one part, ``work`` runs in the calling thread with the kernels' and BLAS's own
    threading. With more, OpenBLAS is held at one thread and kernels run single-threaded in
    every part; if OpenBLAS cannot be held (another BLAS), the parts run one after another.
    """
    stop = threading.Event()
    if len(parts) == 1:
        work(0, *parts[0], stop)
        return
    with single_threaded_blas() as single:
        if not single:  # a BLAS we cannot hold at one thread would be oversubscribed
            for index, (lo, hi) in enumerate(parts):
                work(index, lo, hi, stop)
            return
        errors = []
        settings = config.snapshot()

        def run(index):
            try:
                with config.inherited(settings), serial_in_this_thread():
                    work(index, *parts[index], stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(exc)
                stop.set()

        helpers = [
            threading.Thread(target=run, args=(index,), daemon=True)
            for index in range(1, len(parts))
        ]
        try:
            for thread in helpers:
                thread.start()
            with serial_in_this_thread():
                work(0, *parts[0], stop)
        except BaseException:
            stop.set()
            raise
        finally:
            _join_all([thread for thread in helpers if thread.ident is not None])
    if errors:
        raise errors[0]
