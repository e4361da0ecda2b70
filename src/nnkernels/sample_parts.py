"""Sharing a batch's samples over Python threads, for both convolution routes.

A convolution is a batch of small matrix products (e.g. ``32x144 @ 144x196`` per sample).
OpenBLAS spreads each product over its threads, which pays off for large products but not
for these: its second thread mostly waits. Instead each thread here takes a contiguous share
of the samples and runs the whole per-sample pipeline on it (column kernel, products, folding
back) with one BLAS thread and the kernels' single-threaded twins, or the fused
convolution kernels (:mod:`nnkernels.convolution`), which are single-threaded GIL-free
kernels over a share of the samples. The helper threads persist between calls: starting a
thread costs more than a small convolution's share of the work.

Every per-sample product and kernel computes exactly what it would with one thread, and
callers reduce over samples after the parts are done, so results do not depend on the
thread count.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

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


class _Helpers:
    """The helper threads ``run_parts`` hands parts to: started at the first shared call,
    grown to the largest number of helpers asked for, replaced after ``fork()`` (a child
    has none of its parent's threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.executor = None
        self.size = 0

    def executor_for(self, helpers):
        with self.lock:
            if self.size < helpers:
                if self.executor is not None:
                    self.executor.shutdown(wait=False)
                self.executor = ThreadPoolExecutor(helpers, thread_name_prefix="nnkernels-part")
                self.size = helpers
            return self.executor

    def forget(self):
        """In a forked child: the parent's threads do not exist here."""
        self.lock = threading.Lock()
        self.executor = None
        self.size = 0


_HELPERS = _Helpers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HELPERS.forget)


def _wait_all(futures):
    """Wait for every future even if this thread is interrupted meanwhile; then re-raise that."""
    interrupted = None
    for future in futures:
        while not future.done():
            try:
                wait([future])
            except BaseException as exc:  # noqa: BLE001 - re-raised once all are done
                interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


def run_parts(parts, work):
    """Call ``work(index, lo, hi, stop)`` for every part, the first in the calling thread and
    each other on a helper thread.

    ``stop`` is a :class:`threading.Event` set when any part failed or the calling thread was
    interrupted; ``work`` should check it between chunks and return early. This function
    returns, or raises the first exception (``KeyboardInterrupt`` included), only once every
    part has finished, so no thread is still writing into the caller's arrays. A part no
    helper has started by the time the calling thread is done with its own runs in the
    calling thread (so concurrent and nested calls never wait on each other's helpers).

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

        futures = []
        try:
            executor = _HELPERS.executor_for(len(parts) - 1)
            futures = [executor.submit(run, index) for index in range(1, len(parts))]
            with serial_in_this_thread():
                work(0, *parts[0], stop)
            for index, future in enumerate(futures, start=1):
                if future.cancel():
                    run(index)
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            _wait_all([future for future in futures if not future.cancelled()])
    if errors:
        raise errors[0]
