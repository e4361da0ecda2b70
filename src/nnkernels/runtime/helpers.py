"""Helper threads that run a call's parts side by side: :func:`run_parts`.

A convolution or a matrix product is shared over Python threads in parts (shares of the
samples, or blocks of a product's rows), each running GIL-free kernels that are
single-threaded themselves and call the library's BLAS at one thread. The helper threads
persist between calls, waiting idle (starting a thread costs more than a small call's
share of the work); a forked child starts without them (:mod:`.process`).

The helpers are the library's own threads taking parts from a :class:`queue.SimpleQueue`,
not a :class:`concurrent.futures.ThreadPoolExecutor`: the executor's ``submit`` holds a lock
that its own before-fork hook takes, so a ``fork()`` in a signal handler that interrupts it
would hang the process. Nothing here takes a lock in a fork hook.
"""

import os
import queue
import threading

from .. import config
from .jit import serial_in_this_thread
from .process import STATE, watch_forks

__all__ = ["run_parts"]


_CALLER = object()
_HELPER = object()
#: how often a calling thread waiting for a helper checks that it is still in its process
_FORK_CHECK_SECONDS = 0.05


class _Part:
    """One part of a call, run once: by a helper thread or, if none has started it, by the
    calling thread.

    A claim is one ``dict.setdefault``: it is recorded even when an interrupt lands in the
    calling thread before the claimer has seen the answer, so the calling thread can always
    tell whether a helper holds the part and must be waited for.
    """

    __slots__ = ("_run", "_claims", "_finished", "_done", "_pid")

    def __init__(self, run):
        self._run = run
        self._pid = os.getpid()
        self._claims = {}
        self._finished = False
        self._done = threading.Lock()
        self._done.acquire()

    def _claim(self, claimer):
        return self._claims.setdefault("by", claimer) is claimer

    def run_in_helper(self):
        """Run the part on this helper thread unless the calling thread has claimed it."""
        if self._claim(_HELPER):
            try:
                self._run()
            finally:
                self._finished = True
                self._done.release()

    def run_in_caller(self):
        """Run the part in the calling thread unless a helper has claimed it."""
        if self._claim(_CALLER):
            self._run()

    def cancel_or_wait(self):
        """Claim the part for the calling thread, or wait until the helper that claimed it is
        done; True once no thread runs it. False in a process forked while a helper of the
        parent ran it: the child has no such thread, so the part never finishes there.
        Safe to call again after an interrupt."""
        if self._claim(_CALLER):
            return True
        while not self._finished:
            if os.getpid() != self._pid:
                return False
            # timed, so that a child forked (from a signal handler) during the wait sees
            # that it is one
            if self._done.acquire(timeout=_FORK_CHECK_SECONDS):
                self._done.release()
        return True


def _serve(parts):
    while True:
        parts.get().run_in_helper()


def _helper_queue(helpers):
    """The queue of parts, served by at least ``helpers`` threads (grown, never shrunk)."""
    state = STATE.helpers
    with state.lock:
        if state.queue is None:
            watch_forks()
            state.queue = queue.SimpleQueue()
        while state.size < helpers:
            thread = threading.Thread(
                target=_serve,
                args=(state.queue,),
                name=f"nnkernels-part-{state.size + 1}",
                daemon=True,
            )
            thread.start()
            state.size += 1
        return state.queue


def _finish_all(parts):
    """Return once no helper is running any of ``parts``, even if this thread is interrupted
    meanwhile (then re-raise that). RuntimeError in a child forked while a helper of the
    parent ran one of them."""
    interrupted = None
    unfinished = False
    for part in parts:
        while True:
            try:
                unfinished |= not part.cancel_or_wait()
                break
            except BaseException as exc:  # noqa: BLE001 - re-raised once all are done
                interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    if unfinished:
        raise RuntimeError(
            "this call was under way when the process forked (a fork() from a signal "
            "handler), and part of it was running on a helper thread, which the forked "
            "child does not have: the call cannot finish in the child. Call it again; "
            "the child starts helper threads of its own."
        )


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

    shared = []
    try:
        helper_queue = _helper_queue(len(parts) - 1)
        for index in range(1, len(parts)):
            shared.append(_Part(lambda index=index: run(index)))
            helper_queue.put(shared[-1])
        with serial_in_this_thread():
            work(0, *parts[0], stop)
        for part in shared:
            part.run_in_caller()
    except BaseException:
        stop.set()
        raise
    finally:
        _finish_all(shared)
    if errors:
        raise errors[0]
