"""One place to set how many threads the kernels and NumPy's BLAS use.

Nothing here runs at import. Opt-in: ``set_config(blas_spin_exponent=16)`` makes OpenBLAS's
idle workers sleep after about 30 us instead of spinning for 2**28 cycles (~0.1 s): on a
machine with as many threads as cores, a BLAS worker still spinning after a matrix product
takes a core from the next Numba kernel, and the reverse (:func:`limit_blas_spin`).
"""

import contextlib
import ctypes
import functools
import os
import threading

import numba

from . import config
from ._jit import serial_in_this_thread as single_threaded_kernels
from .runtime import ensure_ready

__all__ = [
    "set_num_threads",
    "get_num_threads",
    "threading_layer",
    "limit_blas_spin",
    "apply_blas_spin",
    "single_threaded_blas",
    "single_threaded_kernels",
    "blas_info",
]

# OpenBLAS workers spin 2**exponent TSC cycles before sleeping (valid 4..30; its default is
# 28). 2**16 cycles is ~30 us at 2.3 GHz: long enough to stay awake between the per-sample
# products of one batched matmul, short enough to be asleep when the next kernel starts.
BLAS_SPIN_EXPONENT = 16


def set_num_threads(n):
    """Use ``n`` threads in the Numba kernels and in NumPy's BLAS; returns the previous count.

    BLAS threads are set in every loaded OpenBLAS directly (``openblas_set_num_threads``, a
    process-wide count, whichever thread calls) and through ``threadpoolctl`` when it is
    installed (the ``bench`` extra), which also reaches other BLAS libraries.
    ``n`` must be between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the core count unless
    ``NUMBA_NUM_THREADS`` says otherwise).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    maximum = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= maximum:
        raise ValueError(f"n must be between 1 and {maximum} (NUMBA_NUM_THREADS), got {n}")
    ensure_ready()  # Numba's pool starts here: the library's choice of layer comes first
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(limits=n, user_api="blas")
    # threadpoolctl, called from a thread other than the one that set the count first, can
    # leave NumPy's OpenBLAS unchanged; openblas_set_num_threads always sets the global count
    for set_fn, _ in _openblas_thread_setters():
        set_fn(n)
    return previous


def get_num_threads():
    """The number of threads a kernel launched from this thread uses: the ``threads``
    setting, else Numba's count in this thread. Prepares the runtime, as the first kernel
    launch would (Numba starts its threading layer to answer)."""
    ensure_ready()
    threads = config.get("threads")
    if threads is None:
        return numba.get_num_threads()
    return min(threads, numba.config.NUMBA_NUM_THREADS)


def threading_layer():
    """Name of the Numba threading layer in use (``None`` before any parallel kernel ran)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _openblas_paths():
    """Paths of the OpenBLAS builds loaded in this process (NumPy's, usually one)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        try:
            with open("/proc/self/maps") as maps:
                names = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        except OSError:
            return []
        return sorted(name for name in names if os.path.isabs(name))
    controllers = ThreadpoolController().select(internal_api="openblas").lib_controllers
    return [controller.filepath for controller in controllers]


@functools.cache
def _openblas_libraries():
    """``((path, ctypes library), ...)`` of the OpenBLAS builds loaded when first asked
    (NumPy's, which ``import nnkernels`` loads)."""
    libraries = []
    for path in _openblas_paths():
        try:
            libraries.append((path, ctypes.CDLL(path)))
        except OSError:
            continue
    return tuple(libraries)


def limit_blas_spin(exponent=BLAS_SPIN_EXPONENT):
    """Make OpenBLAS's idle workers sleep after ``2**exponent`` cycles; True if applied.

    OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` only when its thread pool starts, so this
    sets it, makes OpenBLAS re-read its environment and restarts the pool (the variable is
    restored afterwards). Process-wide, and never called by the library itself: use
    ``nnkernels.set_config(blas_spin_exponent=...)``, which calls it once when set. Nothing
    is done when the user set ``OPENBLAS_THREAD_TIMEOUT`` or NumPy's BLAS is not OpenBLAS.

    Call it only while no other thread can be inside a BLAS call: the pool restarts under
    such a call, which can then hang.

    Measured on the 2-core project machine (``python tools/blas_spin.py float32``): conv C's
    column kernel plus the product that follows it cost 53.0 ms together against 10.5 +
    32.1 ms apart with OpenBLAS's default, 40.2 ms with this (``docs/performance.md``).
    """
    if isinstance(exponent, bool) or not isinstance(exponent, int) or not 4 <= exponent <= 30:
        raise ValueError(f"exponent must be an int from 4 to 30, got {exponent!r}")
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return False
    return _restart_openblas_pools(str(exponent))


def _restart_openblas_pools(timeout):
    """Restart every loaded OpenBLAS's pool, with ``OPENBLAS_THREAD_TIMEOUT=timeout``
    while it re-reads its environment (None: the environment as it is); True if any."""
    applied = False
    for _, lib in _openblas_libraries():
        try:
            read_env, shutdown, start = (
                lib.openblas_read_env,
                lib.blas_thread_shutdown_,
                lib.blas_thread_init,
            )
        except AttributeError:
            continue
        if timeout is not None:
            os.environ["OPENBLAS_THREAD_TIMEOUT"] = timeout
        try:
            read_env()
        finally:
            if timeout is not None:
                del os.environ["OPENBLAS_THREAD_TIMEOUT"]
        shutdown()
        start()
        applied = True
    return applied


_SPIN = {"exponent": None, "applied": False, "note": "not set (OpenBLAS's own timeout)"}


def apply_blas_spin(exponent):
    """Apply the ``blas_spin_exponent`` setting (``None``: OpenBLAS's own timeout again).

    Called by ``set_config``. Applied only while the calling thread is the only Python
    thread (another could be inside a BLAS call while the pool restarts); otherwise the
    setting is recorded as not applied (:func:`spin_state`). Returns whether it was applied.
    """
    if exponent is None and not _SPIN["applied"]:
        _SPIN.update(exponent=None, note="not set (OpenBLAS's own timeout)")
        return False
    if threading.active_count() > 1:
        _SPIN.update(
            exponent=exponent,
            note=(
                f"not applied: {threading.active_count()} Python threads were running when set, "
                "and restarting OpenBLAS's pool under a product can hang it"
            ),
        )
        return False
    if exponent is None:
        applied = _restart_openblas_pools(None)
        _SPIN.update(exponent=None, applied=False, note="restored OpenBLAS's own timeout")
        return applied
    applied = limit_blas_spin(exponent)
    _SPIN.update(
        exponent=exponent,
        applied=applied,
        note=(
            f"OpenBLAS's idle workers sleep after 2**{exponent} cycles"
            if applied
            else "not applied: OPENBLAS_THREAD_TIMEOUT is set, or NumPy's BLAS is not OpenBLAS"
        ),
    )
    return applied


def spin_state():
    """The ``blas_spin_exponent`` setting as last applied, and what became of it."""
    return dict(_SPIN)


def _openblas_thread_setters():
    """``[(set_num_threads, get_num_threads)]`` ctypes functions of each loaded OpenBLAS,
    whatever prefix/suffix its build gave the symbols (NumPy's wheels: ``scipy_..64_``)."""
    setters = []
    for _, lib in _openblas_libraries():
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                try:
                    set_fn = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
                    get_fn = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                except AttributeError:
                    continue
                set_fn.argtypes, set_fn.restype = [ctypes.c_int], None
                get_fn.argtypes, get_fn.restype = [], ctypes.c_int
                setters.append((set_fn, get_fn))
                break
            else:
                continue
            break
    return setters


_SINGLE_BLAS = {"lock": threading.Lock(), "active": 0, "saved": [], "setters": None}

#: what :func:`single_threaded_blas` does to the rest of the process (``show_config``)
SINGLE_THREADED_BLAS_EFFECT = (
    "process-wide: while any thread is inside a block (the fused convolution kernels, and "
    "nnlayers' convolutions sharing samples over threads), every OpenBLAS product in the "
    "process, other threads' included, runs on one thread; the last block to leave restores "
    "the previous count. NumPy's OpenBLAS (pthreads build) has no per-thread count: its "
    "openblas_set_num_threads_local sets the same process-wide count"
)


def _single_blas_after_fork_in_child():
    """A child forked inside a ``single_threaded_blas`` block (in another thread) gets the
    parent's lock state and a block no thread will leave: start afresh and restore."""
    state = _SINGLE_BLAS
    state["lock"] = threading.Lock()
    if state["active"] and state["setters"]:
        for (set_fn, _), count in zip(state["setters"], state["saved"]):
            set_fn(count)
    state["active"] = 0


@contextlib.contextmanager
def single_threaded_blas():
    """Within this block OpenBLAS runs each product on the thread that calls it; yields
    whether that could be arranged (False when NumPy's BLAS is not OpenBLAS).

    For sharing a batch of small products over Python threads: with one BLAS thread,
    concurrent calls run side by side instead of queueing for OpenBLAS's pool. The setting
    is process-wide (see :data:`SINGLE_THREADED_BLAS_EFFECT`): products other threads make
    meanwhile also run on one thread. Nested and concurrent blocks are counted and the last
    one to leave restores the previous thread counts; a child forked inside a block gets
    them back.
    """
    state = _SINGLE_BLAS
    with state["lock"]:
        if state["setters"] is None:
            state["setters"] = _openblas_thread_setters()
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_single_blas_after_fork_in_child)
        setters = state["setters"]
        if setters and state["active"] == 0:
            state["saved"] = [get_fn() for _, get_fn in setters]
            for set_fn, _ in setters:
                set_fn(1)
        state["active"] += 1
    try:
        yield bool(setters)
    finally:
        with state["lock"]:
            state["active"] = max(0, state["active"] - 1)  # 0 after a fork reset it
            if setters and state["active"] == 0:
                for (set_fn, _), count in zip(setters, state["saved"]):
                    set_fn(count)


def blas_info():
    """The BLAS libraries loaded in this process: ``threadpoolctl``'s description of each
    when it is installed, else their paths (from ``/proc/self/maps``)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"filepath": path} for path in _openblas_paths()]
    return [info for info in threadpool_info() if info.get("user_api") == "blas"]
