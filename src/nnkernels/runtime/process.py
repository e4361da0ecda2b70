"""Everything the library holds for the whole process, and what happens to it at ``fork()``.

One object, :data:`STATE`, holds the process-wide state of the runtime: the lock under
which kernels make their dispatchers (:mod:`.jit`), the library's own BLAS (:mod:`.blas`)
and the helper threads that share a call's work (:mod:`.helpers`). Each part is a small
class with an ``after_fork_in_child`` method; one at-fork hook, registered by
:func:`watch_forks` at the first helper thread or BLAS load (never at import), calls them
all. It never waits: the child starts with fresh locks and no helper threads (a child has
none of its parent's threads), and starts its own when it first shares work.
"""

import os
import threading

__all__ = ["STATE", "watch_forks"]


class BlasState:
    """The library's own BLAS once looked for (used by :mod:`.blas`): ``handle`` is the
    loaded library, or None with ``reason`` saying why not; ``looked`` whether it was."""

    def __init__(self):
        self.lock = threading.Lock()
        self.looked = False
        self.handle = None
        self.reason = "not loaded yet (loaded at the first matrix product)"

    def after_fork_in_child(self):
        # the library stays mapped and at one thread (its calls run in the calling thread)
        self.lock = threading.Lock()


class HelperState:
    """The helper threads that share a call's parts (used by :mod:`.helpers`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queue = None
        self.size = 0

    def after_fork_in_child(self):
        # a child has none of its parent's threads
        self.lock = threading.Lock()
        self.queue = None
        self.size = 0


class JitState:
    """The lock under which kernels make their Numba dispatchers (used by :mod:`.jit`)."""

    def __init__(self):
        self.lock = threading.Lock()

    def after_fork_in_child(self):
        self.lock = threading.Lock()


class ProcessState:
    """The runtime's process-wide state: ``jit``, ``blas`` and ``helpers``."""

    def __init__(self):
        self.jit = JitState()
        self.blas = BlasState()
        self.helpers = HelperState()
        self.forks_watched = False


STATE = ProcessState()
_WATCH_LOCK = threading.Lock()


def _after_fork_in_child():
    global _WATCH_LOCK
    _WATCH_LOCK = threading.Lock()
    STATE.jit.after_fork_in_child()
    STATE.blas.after_fork_in_child()
    STATE.helpers.after_fork_in_child()


def watch_forks():
    """Register the at-fork hook, once per process (a no-op where ``fork`` does not exist)."""
    if STATE.forks_watched:
        return
    with _WATCH_LOCK:
        if STATE.forks_watched:
            return
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        STATE.forks_watched = True
