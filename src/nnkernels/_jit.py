"""The one decorator every kernel uses, and the threading layer it runs on.

Kernels are ``njit(parallel=True, nogil=True)`` functions with an on-disk cache that
treats any unreadable or unwritable entry as a miss (see ``_TolerantCache``).

Threading layer, unless the user chose one (``NUMBA_THREADING_LAYER``,
``NUMBA_THREADING_LAYER_PRIORITY`` or ``numba.config``): Intel TBB when it can be loaded
(``pip install 'nnkernels[tbb]'``), else Numba's ``workqueue``; never GNU OpenMP, whose
forked children die. Measured here, a parallel launch costs about 2 us under TBB and
about 125 us under workqueue (its handshakes go through condition variables twice per
launch), which makes TBB up to 1.8x faster on the benchmark's pooling and batch-norm
cases. pip puts ``libtbb.so.12`` in the environment's ``lib/``, which the loader does not
search, so it is loaded here by path.

Safety under each layer:

* workqueue aborts the process when two Python threads launch kernels at once, so every
  parallel launch under it holds one process-wide lock;
* ``fork()`` waits until no parallel launch is in flight (``_LaunchGate``);
* TBB can only shut its workers down before ``fork()`` when the forking thread is the only
  one that ever launched a kernel; otherwise a child could hang on its first parallel
  launch, so such a child runs every kernel's single-threaded twin (same results).
"""

import contextlib
import ctypes
import glob
import os
import sys
import threading
import types

import numba
from numba import njit
from numba.core.caching import FunctionCache

__all__ = ["parallel_kernel", "inner_function", "forced_parallel", "serial_in_this_thread",
           "PARALLEL_THRESHOLD"]

_KERNEL_LOCK = threading.Lock()


class _LaunchGate:
    """Counts parallel launches in flight so that ``fork()`` waits until there are none.

    A child forked while another thread is inside a parallel region inherits a thread pool
    stopped half-way (TBB then warns it cannot join its workers and the child may hang) or
    a held launch lock (workqueue). Launches still run concurrently with each other.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0

    def __enter__(self):
        with self._cond:
            self._active += 1

    def __exit__(self, *exc):
        with self._cond:
            self._active -= 1
            if not self._active:
                self._cond.notify_all()

    def before_fork(self):
        self._cond.acquire()  # held across fork: no launch can start meanwhile
        while self._active:
            self._cond.wait()

    def after_fork_in_parent(self):
        self._cond.release()


_GATE = _LaunchGate()


#: idents of the Python threads that launched a parallel kernel in this process
_LAUNCHERS = set()
_FORKING_THREAD = None
#: set in a child forked when TBB could not be shut down cleanly: no parallel launches
_SERIAL_ONLY = False


def _before_fork():
    global _FORKING_THREAD
    _GATE.before_fork()
    _KERNEL_LOCK.acquire()
    _FORKING_THREAD = threading.get_ident()


def _after_fork_in_parent():
    _KERNEL_LOCK.release()
    _GATE.after_fork_in_parent()


def _after_fork_in_child():
    global _KERNEL_LOCK, _GATE, _SERIAL_ONLY
    _KERNEL_LOCK = threading.Lock()
    _GATE = _LaunchGate()
    if _layer_in_use() == "tbb" and _LAUNCHERS - {_FORKING_THREAD}:
        _SERIAL_ONLY = True
    _LAUNCHERS.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def _load_pip_tbb():
    """Make a pip-installed TBB visible to Numba; return True when it loaded."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return True
            except OSError:
                continue
    try:
        ctypes.CDLL("libtbb.so.12", mode=ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        return False


def _choose_threading_layer():
    if os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER != "default":
        if numba.config.THREADING_LAYER in ("tbb", "threadsafe", "forksafe", "safe"):
            _load_pip_tbb()  # so that a pip-installed TBB can satisfy the request
        return
    if os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
        if "tbb" in numba.config.THREADING_LAYER_PRIORITY:
            _load_pip_tbb()
        return
    if _load_pip_tbb():
        # Numba falls back to workqueue if it cannot use this TBB (workqueue always loads,
        # so omp, which must be listed, is never reached)
        numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]
    else:
        numba.config.THREADING_LAYER = "workqueue"


_choose_threading_layer()
_LAYER = None


def _layer_in_use():
    """The layer Numba loaded, or None before the first parallel launch."""
    global _LAYER
    if _LAYER is None:
        try:
            _LAYER = numba.threading_layer()
        except ValueError:
            return None
    return _LAYER


def _needs_lock():
    return _layer_in_use() in (None, "workqueue")


_OPTIONS = dict(nogil=True, error_model="numpy", fastmath=False)

#: below about this many elements of work a kernel runs single-threaded: a parallel launch
#: (about 5-10 us in a layer under TBB, over 100 us under workqueue) would cost more than
#: it saves
PARALLEL_THRESHOLD = 1 << 15
_FORCE_PARALLEL = False  # True inside forced_parallel()
_THIS_THREAD = threading.local()  # .serial: True inside serial_in_this_thread()


@contextlib.contextmanager
def forced_parallel():
    """Within this block every kernel runs its multi-threaded version, in every thread
    (for precompiling, and for tests that must exercise the threaded kernels)."""
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
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
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
            stamp = (self._cache_file._source_stamp,
                     tuple(_file_stamp(path) for path in also_reads))
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


def _compile(fn, parallel, also_reads=()):
    """A Numba dispatcher for ``fn`` with the tolerant disk cache (or none if nowhere is
    writable: Numba then raises "no locator available" and we run uncached)."""
    dispatcher = njit(parallel=parallel, cache=False, **_OPTIONS)(fn)
    try:
        dispatcher._cache = _TolerantCache(fn, also_reads)
    except RuntimeError:
        pass
    return dispatcher


class _Kernel:
    """A compiled kernel; launches hold a lock when the threading layer is not thread-safe.

    Calling it runs the multi-threaded (``prange``) version; ``kernel.serial`` is the same
    code compiled without threads, and ``kernel.sized(work)`` picks one by the amount of work.
    """

    def __init__(self, fn, parallel, also_reads=()):
        self.dispatcher = _compile(fn, parallel, also_reads)
        self._fn = fn
        self._also_reads = also_reads
        self._parallel = parallel
        self._serial = None if parallel else self
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        if not self._parallel:
            return self.dispatcher(*args)
        if _SERIAL_ONLY:
            return self.serial.dispatcher(*args)
        thread = threading.get_ident()
        if thread not in _LAUNCHERS:
            _LAUNCHERS.add(thread)
        with _GATE:
            if _needs_lock():
                with _KERNEL_LOCK:
                    return self.dispatcher(*args)
            return self.dispatcher(*args)

    @property
    def serial(self):
        """The single-threaded twin (compiled on first use, cached like any kernel)."""
        if self._serial is None:
            self._serial = _Kernel(_renamed(self._fn, "_serial"), parallel=False,
                                   also_reads=self._also_reads)
        return self._serial

    def sized(self, work):
        """The parallel kernel for ``work >= PARALLEL_THRESHOLD`` elements, else the serial one."""
        if _FORCE_PARALLEL:
            return self
        if work < PARALLEL_THRESHOLD or getattr(_THIS_THREAD, "serial", False):
            return self.serial
        return self


def parallel_kernel(fn=None, *, also_reads=()):
    """Compile ``fn`` as a cached, GIL-free, multi-threaded (``prange``) kernel.

    ``error_model="numpy"`` drops Python's division-by-zero checks (kernels receive
    validated input and NaN/inf must propagate as in NumPy); ``fastmath`` stays off so
    results are reproducible and match the reference where the math allows. Used as
    ``@parallel_kernel(also_reads=(module, ...))``, the modules whose functions the kernel
    calls (their code is compiled into it) take part in its cache's validity check.
    """
    paths = tuple(module.__file__ for module in also_reads)
    if fn is None:
        return lambda function: _Kernel(function, parallel=True, also_reads=paths)
    return _Kernel(fn, parallel=True, also_reads=paths)


def inner_function(fn):
    """Compile ``fn`` for calling from inside other kernels (a plain Numba dispatcher)."""
    return _compile(fn, parallel=False)

