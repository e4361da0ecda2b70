"""Helper threads that run a call's parts side by side: :func:`run_parts`.

A convolution or a matrix product is shared over Python threads in parts (shares of the
samples, or blocks of a product's rows), each running GIL-free kernels that are
single-threaded themselves and call the library's BLAS at one thread. The helper threads
persist between calls, waiting idle (starting a thread costs more than a small call's
share of the work); a forked child starts without them (:mod:`.process`).
"""

import threading
from concurrent.futures import ThreadPoolExecutor, wait

from .. import config
from .jit import serial_in_this_thread
from .process import STATE, watch_forks

__all__ = ["run_parts"]


def _executor_for(helpers):
    """An executor with at least ``helpers`` threads (grown, never shrunk)."""
    state = STATE.helpers
    with state.lock:
        if state.size < helpers:
            watch_forks()
            if state.executor is not None:
                state.executor.shutdown(wait=False)
            state.executor = ThreadPoolExecutor(helpers, thread_name_prefix="nnkernels-part")
            state.size = helpers
        return state.executor


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
    """Call ``work(index, lo, hi, stop)`` for every ``(lo, hi)`` of ``parts``, the first in
    the calling thread and each other on a helper thread.

    ``stop`` is a :class:`threading.Event` set when any part failed or the calling thread was
    interrupted; ``work`` should check it between chunks and return early. This function
    returns, or raises the first exception (``KeyboardInterrupt`` included), only once every
    part has finished, so no thread is still writing into the caller's arrays. A part no
    helper has started by the time the calling thread is done with its own runs in the
    calling thread (so concurrent and nested calls never wait on each other's helpers).

    With one part, ``work`` runs in the calling thread and may share its own work further;
    with more, every part runs its work in one share (:func:`~.jit.serial_in_this_thread`),
    and the calling thread's settings (``config_context``) apply in the helpers too.
    """
    stop = threading.Event()
    if len(parts) == 1:
        work(0, *parts[0], stop)
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
        executor = _executor_for(len(parts) - 1)
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
