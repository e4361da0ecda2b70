"""Everything the library holds for the whole process, and what happens to it at ``fork()``.

One object, :data:`STATE`, holds the process-wide state of the runtime: the threading
layer's decision and the launch bookkeeping (:mod:`.launch`), the lock under which kernels
make their dispatchers (:mod:`.jit`), the library's own BLAS (:mod:`.blas`) and the helper
threads that share a call's work (:mod:`.helpers`). Each part
is a small class with an ``after_fork_in_child`` method; one pair of at-fork hooks,
registered by :func:`watch_forks` at the first launch, BLAS load or helper thread (never at
import), calls them all.

The hooks never wait: before ``fork()`` they note which thread forks and how many launches
are in flight; the child starts with fresh locks, no helper threads, and, where the
threading layer is not fork-safe in that situation, runs only single-threaded twins.
"""

import os
import threading

__all__ = ["STATE", "watch_forks"]


class LayerState:
    """The threading layer's decision and the launch bookkeeping (used by :mod:`.launch`)."""

    def __init__(self):
        self.ready = False
        self.ready_lock = threading.Lock()
        self.launch_lock = threading.Lock()  # held around launches under workqueue
        self.count_lock = threading.Lock()
        self.in_flight = 0
        self.launchers = set()  # idents of the threads that launched a parallel kernel
        self.locked_launches = True  # until the layer is known
        self.serial_only = None  # why a forked child runs single-threaded twins only
        self.layer = None
        self.requested = None
        self.chosen_by = None
        self.tbb_path = None
        self.fork = None  # (forking thread, launches in flight, launchers) in before-fork

    def before_fork(self):
        # takes no lock: a signal handler may fork while this thread holds any of them
        self.fork = (threading.get_ident(), self.in_flight, frozenset(self.launchers))

    def after_fork_in_child(self, fork_safety):
        self.ready_lock = threading.Lock()
        self.launch_lock = threading.Lock()
        self.count_lock = threading.Lock()
        if self.fork is not None and not self.serial_only:
            self.serial_only = fork_safety(self.layer, *self.fork)
        self.in_flight = 0
        self.launchers = set()
        self.fork = None


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
        self.executor = None
        self.size = 0

    def after_fork_in_child(self):
        # a child has none of its parent's threads
        self.lock = threading.Lock()
        self.executor = None
        self.size = 0


class JitState:
    """The lock under which kernels make their Numba dispatchers (used by :mod:`.jit`)."""

    def __init__(self):
        self.lock = threading.Lock()

    def after_fork_in_child(self):
        self.lock = threading.Lock()


class ProcessState:
    """The runtime's process-wide state: ``layer``, ``jit``, ``blas`` and ``helpers``."""

    def __init__(self):
        self.layer = LayerState()
        self.jit = JitState()
        self.blas = BlasState()
        self.helpers = HelperState()
        self.forks_watched = False
        self.fork_safety = None  # set by .launch: why a child may not run parallel regions


STATE = ProcessState()
_WATCH_LOCK = threading.Lock()


def _before_fork():
    STATE.layer.before_fork()


def _after_fork_in_child():
    global _WATCH_LOCK
    _WATCH_LOCK = threading.Lock()
    STATE.layer.after_fork_in_child(STATE.fork_safety or (lambda *_: None))
    STATE.jit.after_fork_in_child()
    STATE.blas.after_fork_in_child()
    STATE.helpers.after_fork_in_child()


def watch_forks():
    """Register the at-fork hooks, once per process (a no-op where ``fork`` does not exist)."""
    if STATE.forks_watched:
        return
    with _WATCH_LOCK:
        if STATE.forks_watched:
            return
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        STATE.forks_watched = True
