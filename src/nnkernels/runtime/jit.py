"""The decorators every kernel uses, the rule that decides how a call's work is shared,
and the table of every kernel made.

A kernel is a single-threaded, GIL-free ``njit`` function over a range of independent
items (planes, blocks, samples) with an on-disk cache that treats any unreadable or
unwritable entry as a miss (see ``_TolerantCache``). Its callers run it on one share of the
items in the calling thread for small work, or on one share per thread on the library's
helper threads (:func:`nnkernels.runtime.partition.run_shares`,
:mod:`nnkernels.runtime.helpers`): one compiled version per signature serves both, and the
library never starts Numba's own threading layer. :func:`one_share` is the rule;
:func:`forced_parallel` and :func:`serial_in_this_thread` adjust it for a block.
"""

import contextlib
import os
import threading

from numba import njit
from numba.core.caching import FunctionCache
from numba.core.compiler import Compiler

from .. import config
from .process import STATE

__all__ = [
    "threaded_kernel",
    "inner_function",
    "forced_parallel",
    "serial_in_this_thread",
    "one_share",
    "all_kernels",
]

_OPTIONS = dict(nogil=True, error_model="numpy", fastmath=False)

_KERNELS = []  # every kernel made, in order of creation
_FORCE_PARALLEL = False  # True inside forced_parallel()
_THIS_THREAD = threading.local()  # .serial: True inside serial_in_this_thread()


@contextlib.contextmanager
def forced_parallel():
    """Within this block every call shares its work over the threads, however small, in
    every thread (for the kernel table's checks; ``serial_in_this_thread`` does not apply).
    Users lower the ``parallel_threshold`` setting instead."""
    global _FORCE_PARALLEL
    previous, _FORCE_PARALLEL = _FORCE_PARALLEL, True
    try:
        yield
    finally:
        _FORCE_PARALLEL = previous


@contextlib.contextmanager
def serial_in_this_thread():
    """Within this block, calls made from this thread run their work in one share (same
    results), so that work already shared over threads is not shared again. Other threads
    are not affected; ``forced_parallel`` wins over it."""
    previous = getattr(_THIS_THREAD, "serial", False)
    _THIS_THREAD.serial = True
    try:
        yield
    finally:
        _THIS_THREAD.serial = previous


def one_share(work):
    """Whether ``work`` (elements) runs in one share in the calling thread: below the
    ``parallel_threshold`` setting, or inside a share of work already spread over threads
    (:func:`serial_in_this_thread`); :func:`forced_parallel` wins over both."""
    if _FORCE_PARALLEL:
        return False
    return work < config.get("parallel_threshold") or getattr(_THIS_THREAD, "serial", False)


def _file_stamp(path):
    stat = os.stat(path)
    return stat.st_mtime, stat.st_size


class _TolerantCache(FunctionCache):
    """Numba's on-disk cache, where an unreadable or unwritable entry is only a miss.

    A corrupt, truncated or foreign index or object file (a killed writer, a full disk, two
    processes writing at once) would otherwise raise in this process and every later one.

    Numba invalidates a kernel's entries when the kernel's own source file changes; a
    kernel that compiles in code from other files names them in ``also_reads`` so that a
    change to any of them invalidates its entries too.
    """

    def __init__(self, py_func, also_reads=()):
        super().__init__(py_func)
        if also_reads:
            stamp = (
                self._cache_file._source_stamp,
                tuple(_file_stamp(path) for path in also_reads),
            )
            self._cache_file._source_stamp = stamp

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:  # noqa: BLE001 - any failure to load means: compile again
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:  # noqa: BLE001 - the kernel works; it just is not cached
            pass


class _NoAliasCompiler(Compiler):
    """Numba's compiler, telling LLVM that no two array arguments share memory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state.flags.noalias = True


def _compile(fn, also_reads=(), noalias=False, inline="never"):
    """A Numba dispatcher for ``fn`` with the tolerant disk cache (or none if nowhere is
    writable: Numba then raises "no locator available" and we run uncached)."""
    options = dict(_OPTIONS, pipeline_class=_NoAliasCompiler) if noalias else _OPTIONS
    dispatcher = njit(cache=False, inline=inline, **options)(fn)
    try:
        dispatcher._cache = _TolerantCache(fn, also_reads)
    except RuntimeError:
        pass
    return dispatcher


class _Kernel:
    """A kernel: a cached, GIL-free dispatcher, made when first needed."""

    def __init__(self, fn, also_reads=(), noalias=False):
        self._dispatcher = None
        self._fn = fn
        self._also_reads = also_reads
        self._noalias = noalias
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        _KERNELS.append(self)

    @property
    def dispatcher(self):
        """The Numba dispatcher, made when first needed (making every kernel's at import
        would slow down every process that imports the library)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            with STATE.jit.lock:
                if self._dispatcher is None:
                    self._dispatcher = _compile(self._fn, self._also_reads, self._noalias)
                dispatcher = self._dispatcher
        return dispatcher

    def __call__(self, *args):
        return self.dispatcher(*args)


def threaded_kernel(*, also_reads=(), noalias=False):
    """Compile the decorated function as a cached, GIL-free, single-threaded kernel that
    callers run on one share of the work, or on several shares on several threads at once
    (:func:`nnkernels.runtime.partition.run_shares` for a range of items).

    ``error_model="numpy"`` drops Python's division-by-zero checks (kernels receive
    validated input and NaN/inf must propagate as in NumPy); ``fastmath`` stays off so
    results are reproducible and match the reference where the math allows.
    ``also_reads=(module, ...)``: the modules whose functions the kernel calls (their code is
    compiled into it) take part in its cache's validity check. ``noalias=True`` promises
    that no two array arguments of any call share memory, so that LLVM may vectorise loops
    storing to one array and loading from another. Arrays made inside the kernel
    (``reshape``) do not carry the promise: pass the arrays the loops index.
    """
    paths = tuple(module.__file__ for module in also_reads)
    return lambda function: _Kernel(function, also_reads=paths, noalias=noalias)


def inner_function(fn=None, *, inline=False):
    """Compile ``fn`` for calling from inside other kernels (a plain Numba dispatcher).

    ``@inner_function(inline=True)``: a small helper that Numba copies into each caller
    instead of compiling it as a function of its own (each separate compile adds a fixed
    cost to a cold start, whatever the function's size).
    """
    if fn is None:
        return lambda function: _compile(function, inline="always" if inline else "never")
    return _compile(fn)


def all_kernels():
    """Every kernel created so far (module-level ones exist once their module is imported;
    kernels made by factories, once made)."""
    return list(_KERNELS)
