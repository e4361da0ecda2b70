"""The one decorator every kernel uses, and the table of every kernel it made.

Kernels are ``njit(parallel=True, nogil=True)`` functions with an on-disk cache that
treats any unreadable or unwritable entry as a miss (see ``_TolerantCache``). Each has a
single-threaded twin (the same code compiled without threads) for small work. Launches go
through :mod:`.launch`, which prepares the threading layer at the first one and
keeps launches safe under threads and ``fork()``.

Threaded kernels (:func:`threaded_kernel`) are compiled without ``prange`` and take a share
of the work as arguments; their callers run the shares on Python threads
(:mod:`.helpers`). They suit loops whose every iteration is large (a sample's
products), where a parfor would add compile time and no speed.
"""

import contextlib
import os
import threading
import types

from numba import njit
from numba.core.caching import FunctionCache
from numba.core.compiler import Compiler

from .. import config
from . import launch
from .process import STATE

__all__ = [
    "parallel_kernel",
    "threaded_kernel",
    "inner_function",
    "forced_parallel",
    "serial_in_this_thread",
    "one_share",
    "all_kernels",
]

_OPTIONS = dict(nogil=True, error_model="numpy", fastmath=False)

_KERNELS = []  # every parallel and threaded _Kernel made, in order of creation
_FORCE_PARALLEL = False  # True inside forced_parallel()
_THIS_THREAD = threading.local()  # .serial: True inside serial_in_this_thread()


@contextlib.contextmanager
def forced_parallel():
    """Within this block every kernel picked by size runs its multi-threaded version, in
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
    """Within this block, kernels picked by size and called from this thread run their
    single-threaded twins (same results), so that work already shared over Python threads
    does not also start the kernels' thread pool. Other threads are not affected;
    ``forced_parallel`` wins over it."""
    previous = getattr(_THIS_THREAD, "serial", False)
    _THIS_THREAD.serial = True
    try:
        yield
    finally:
        _THIS_THREAD.serial = previous


def _renamed(fn, suffix):
    """A copy of ``fn`` under another name, so Numba caches it in files of its own."""
    twin = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__
    )
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__module__ = fn.__module__
    return twin


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
    """Numba's compiler, telling LLVM that no two array arguments share memory (Numba's
    parfors do so for their loop bodies when it finds no aliasing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state.flags.noalias = True


def _compile(fn, parallel, also_reads=(), noalias=False, inline="never"):
    """A Numba dispatcher for ``fn`` with the tolerant disk cache (or none if nowhere is
    writable: Numba then raises "no locator available" and we run uncached)."""
    options = dict(_OPTIONS, pipeline_class=_NoAliasCompiler) if noalias else _OPTIONS
    dispatcher = njit(parallel=parallel, cache=False, inline=inline, **options)(fn)
    try:
        dispatcher._cache = _TolerantCache(fn, also_reads)
    except RuntimeError:
        pass
    return dispatcher


class _Kernel:
    """A compiled kernel, launched through :func:`.launch.launch`.

    Calling it runs the multi-threaded (``prange``) version; ``kernel.serial`` is the same
    code compiled without threads, and ``kernel.sized(work)`` picks one by the amount of
    work (the ``parallel_threshold`` setting). ``used_sized`` records whether ``sized`` was
    ever asked, i.e. whether the twin is in use.
    """

    def __init__(self, fn, parallel, also_reads=(), noalias=False):
        self._dispatcher = None
        self._fn = fn
        self._also_reads = also_reads
        self._noalias = noalias
        self._parallel = parallel
        self._serial = None if parallel else self
        self.used_sized = False
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        if parallel:
            _KERNELS.append(self)

    @property
    def dispatcher(self):
        """The Numba dispatcher, made when first needed (making every kernel's at import
        would cost each process that imports the library about 15 ms)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            with STATE.jit.lock:
                if self._dispatcher is None:
                    self._dispatcher = _compile(
                        self._fn, self._parallel, self._also_reads, self._noalias
                    )
                dispatcher = self._dispatcher
        return dispatcher

    def __call__(self, *args):
        if not self._parallel:
            return self.dispatcher(*args)
        return launch.launch(self, args)

    @property
    def serial(self):
        """The single-threaded twin (compiled on first use, cached like any kernel)."""
        if self._serial is None:
            self._serial = _Kernel(
                _renamed(self._fn, "_serial"),
                parallel=False,
                also_reads=self._also_reads,
                noalias=self._noalias,
            )
        return self._serial

    def sized(self, work):
        """The parallel kernel for ``work`` of at least the ``parallel_threshold`` setting
        (elements), else the serial one."""
        self.used_sized = True
        return self.serial if one_share(work) else self


def parallel_kernel(fn=None, *, also_reads=(), noalias=False):
    """Compile ``fn`` as a cached, GIL-free, multi-threaded (``prange``) kernel.

    ``error_model="numpy"`` drops Python's division-by-zero checks (kernels receive
    validated input and NaN/inf must propagate as in NumPy); ``fastmath`` stays off so
    results are reproducible and match the reference where the math allows. Used as
    ``@parallel_kernel(also_reads=(module, ...))``, the modules whose functions the kernel
    calls (their code is compiled into it) take part in its cache's validity check.

    ``noalias=True`` promises that no two array arguments of any call share memory, so
    that LLVM may vectorise loops storing to one array and loading from another; the
    single-threaded twin needs it for that (a parfor's loop body gets it from Numba when
    Numba sees no aliasing). Arrays made inside the kernel (``reshape``) do not carry the
    promise: pass the arrays the loops index.
    """
    paths = tuple(module.__file__ for module in also_reads)
    if fn is None:
        return lambda function: _Kernel(function, parallel=True, also_reads=paths, noalias=noalias)
    return _Kernel(fn, parallel=True, also_reads=paths, noalias=noalias)


def threaded_kernel(*, also_reads=(), noalias=False):
    """Compile the decorated function as a cached, GIL-free, single-threaded kernel that
    callers run on several Python threads at once, each on its own share of the work
    (:func:`nnkernels.runtime.partition.run_shares` for a range of items).

    Used as ``@threaded_kernel(also_reads=(module, ...), noalias=...)`` (see
    :func:`parallel_kernel`). Small work runs in one share in the calling thread: the same
    compiled code, so such a kernel needs no twin.
    """
    paths = tuple(module.__file__ for module in also_reads)

    def compile_threaded(function):
        kernel = _Kernel(function, parallel=False, also_reads=paths, noalias=noalias)
        _KERNELS.append(kernel)
        return kernel

    return compile_threaded


def one_share(work):
    """Whether ``work`` (elements) runs in one share in the calling thread: below the
    ``parallel_threshold`` setting, or inside a share of work already spread over threads
    (:func:`serial_in_this_thread`); :func:`forced_parallel` wins over both."""
    if _FORCE_PARALLEL:
        return False
    return work < config.get("parallel_threshold") or getattr(_THIS_THREAD, "serial", False)


def inner_function(fn=None, *, inline=False):
    """Compile ``fn`` for calling from inside other kernels (a plain Numba dispatcher).

    ``@inner_function(inline=True)``: a small helper that Numba copies into each caller
    instead of compiling it as a function of its own (a separate compile costs about 0.1 s
    of a cold start, whatever the function's size).
    """
    if fn is None:
        return lambda function: _compile(
            function, parallel=False, inline="always" if inline else "never"
        )
    return _compile(fn, parallel=False)


def all_kernels():
    """Every parallel and threaded kernel created so far (module-level ones exist once their
    module is imported; kernels made by factories, once made)."""
    return list(_KERNELS)
