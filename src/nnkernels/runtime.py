"""The kernels' runtime: threading layer, launches, fork safety, and :func:`show_config`.

``import nnkernels`` changes nothing in the process. The first parallel kernel launch calls
:func:`ensure_ready` once, which

* decides the Numba threading layer, unless it is already decided: Numba loads one layer
  per process, and whoever names one first wins. The user (``NUMBA_THREADING_LAYER``,
  ``NUMBA_THREADING_LAYER_PRIORITY``, ``numba.config``) or code that already ran a parallel
  function or ``numba.set_num_threads`` has decided; the library then loads pip's Intel TBB
  if that request names TBB, and otherwise uses what it finds. Where nobody decided, it
  requests the ``threading_layer`` setting, else TBB when pip's TBB loads, else Numba's own
  choice (GNU OpenMP where available). A request is set in ``numba.config`` only while Numba
  loads the layer and restored afterwards;
* registers at-fork hooks (below).

Every launch then

* runs the kernel's single-threaded twin (same results) in a forked child whose layer
  cannot run parallel code safely (:func:`fork_safety`);
* holds one process-wide lock under Numba's ``workqueue`` layer, which aborts the process
  when two threads launch at once (only the library's own launches take this lock);
* uses the ``threads`` setting's thread count, if set, for that launch only.

The at-fork hooks never wait: before ``fork()`` they note which thread forks, how many
launches are in flight and which threads ever launched; the child starts with fresh locks
and, where the layer is not fork-safe in that situation, runs only single-threaded twins.
The hooks exist from the first launch on: a child forked earlier, from a process where
other code had started GNU OpenMP, cannot be told apart from its parent, and GNU OpenMP
terminates its first parallel region.
"""

import ctypes
import glob
import os
import platform
import sys
import threading

import numba

from . import config

__all__ = ["ensure_ready", "runtime_info", "show_config", "fork_safety", "launch"]

#: Numba's threading-layer priority when nobody changed it
NUMBA_DEFAULT_PRIORITY = ("tbb", "omp", "workqueue")
_TBB_REQUESTS = ("tbb", "safe", "threadsafe")


class _State:
    """Process-wide launch state; a forked child starts from a fresh copy of the locks."""

    def __init__(self):
        self.ready = False
        self.ready_lock = threading.Lock()
        self.launch_lock = threading.Lock()  # held around launches under workqueue
        self.count_lock = threading.Lock()
        self.in_flight = 0
        self.launchers = set()  # idents of the threads that launched a parallel kernel
        self.locked_launches = True  # until the layer is known
        self.serial_only = None  # reason a forked child runs single-threaded twins only
        self.layer = None
        self.requested = None
        self.chosen_by = None
        self.tbb_path = None
        self.fork = None  # (forking thread, launches in flight, launchers) in before-fork


_STATE = _State()


def _env_choice():
    for name in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"):
        if os.environ.get(name):
            return f"the user ({name}={os.environ[name]})"
    return None


def _layer_loaded():
    """The layer Numba loaded in this process, or None (never loads one)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def who_chose():
    """Who decided the threading layer before the library's first launch, or None."""
    if _layer_loaded() is not None:
        return "code that ran before the library's first launch (Numba had loaded it)"
    choice = _env_choice()
    if choice:
        return choice
    if str(numba.config.THREADING_LAYER).lower() != "default":
        return f"the user (numba.config.THREADING_LAYER={numba.config.THREADING_LAYER!r})"
    if tuple(numba.config.THREADING_LAYER_PRIORITY) != NUMBA_DEFAULT_PRIORITY:
        return (
            "the user (numba.config.THREADING_LAYER_PRIORITY="
            f"{list(numba.config.THREADING_LAYER_PRIORITY)})"
        )
    return None


def _pip_tbb_paths():
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        yield from sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*")))


def _load_pip_tbb():
    """Load pip's ``libtbb.so.12`` by path; return the path, or None.

    pip puts it in the environment's ``lib/``, which the loader does not search. Loaded
    locally (``RTLD_LOCAL``): Numba's ``tbbpool`` needs it by soname, and the loader then
    uses the copy already in the process.
    """
    if _STATE.tbb_path:
        return _STATE.tbb_path
    for path in _pip_tbb_paths():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        except OSError:
            continue
        _STATE.tbb_path = path
        return path
    return None


def _user_requests_tbb():
    if str(numba.config.THREADING_LAYER).lower() in _TBB_REQUESTS:
        return True
    priority = list(numba.config.THREADING_LAYER_PRIORITY)
    return str(numba.config.THREADING_LAYER).lower() == "default" and priority[0] == "tbb"


def _start_numba_layer(request):
    """Make Numba load its layer, with ``numba.config.THREADING_LAYER = request`` (if not
    None) only meanwhile; return the reason a request failed, or None."""
    if request is None:
        numba.get_num_threads()  # public API; loads the layer as a first launch would
        return None
    previous = numba.config.THREADING_LAYER
    numba.config.THREADING_LAYER = request
    try:
        numba.get_num_threads()
        return None
    except ValueError as exc:
        return str(exc).splitlines()[0]
    finally:
        numba.config.THREADING_LAYER = previous


def _decide_layer():
    state = _STATE
    state.chosen_by = who_chose()
    if state.chosen_by is not None:
        if _layer_loaded() is None and _user_requests_tbb():
            _load_pip_tbb()  # so that pip's TBB can satisfy the user's request
        _start_numba_layer(None)
        return
    setting = config.get("threading_layer")
    state.requested = setting
    if setting is None:
        state.requested = "tbb" if _load_pip_tbb() else None
        state.chosen_by = (
            "nnkernels (pip's Intel TBB loads)"
            if state.requested
            else "Numba's default order (no TBB installed, no layer set)"
        )
        _start_numba_layer(None)  # Numba's default order tries TBB first
        return
    if setting == "tbb":
        _load_pip_tbb()
    failure = _start_numba_layer(setting)
    state.chosen_by = f"nnkernels (setting threading_layer={setting!r})"
    if failure:
        state.chosen_by += f"; not loadable ({failure}), Numba's default order used"
        _start_numba_layer(None)


def ensure_ready():
    """Prepare the runtime once per process; called by the first parallel launch.

    Decides and loads the threading layer (see the module docstring) and registers the
    at-fork hooks. Idempotent and thread-safe.
    """
    state = _STATE
    if state.ready:
        return
    with state.ready_lock:
        if state.ready:
            return
        _decide_layer()
        state.layer = _layer_loaded()
        state.locked_launches = state.layer == "workqueue"
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        state.ready = True


def launch(kernel, args):
    """Run a parallel kernel's dispatcher on ``args`` (see the module docstring)."""
    state = _STATE
    if not state.ready:
        ensure_ready()
    if state.serial_only:
        return kernel.serial.dispatcher(*args)
    thread = threading.get_ident()
    if thread not in state.launchers:
        state.launchers.add(thread)
    threads = config.get("threads")
    with state.count_lock:
        state.in_flight += 1
    try:
        if state.locked_launches:
            with state.launch_lock:
                return _run(kernel.dispatcher, args, threads)
        return _run(kernel.dispatcher, args, threads)
    finally:
        with state.count_lock:
            state.in_flight -= 1


def _run(dispatcher, args, threads):
    if threads is None:
        return dispatcher(*args)
    previous = numba.get_num_threads()  # per calling thread in Numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return dispatcher(*args)
    finally:
        numba.set_num_threads(previous)


# ------------------------------------------------------------------ fork
def _before_fork():
    # takes no lock: a signal handler may fork while this thread holds any of them
    state = _STATE
    state.fork = (threading.get_ident(), state.in_flight, frozenset(state.launchers))


def fork_safety(layer, forking_thread, in_flight, launchers):
    """Why a child forked in this situation must not start parallel regions, or None.

    Parameters
    ----------
    layer : str or None
        The threading layer loaded in the parent.
    forking_thread : int
        Ident of the thread that called ``fork()``.
    in_flight : int
        Parallel launches of the library in progress at the fork.
    launchers : set of int
        Idents of the threads that launched parallel kernels before the fork.
    """
    if layer == "omp":
        return (
            "GNU OpenMP terminates a forked child's first parallel region "
            "(its runtime was started in the parent)"
        )
    if in_flight:
        return "a parallel launch was in flight at fork(); the pool's state is undefined"
    if layer == "tbb" and set(launchers) - {forking_thread}:
        return (
            "TBB's workers served threads other than the forking one and may not have "
            "been joined at fork()"
        )
    return None


def _after_fork_in_child():
    state = _STATE
    state.ready_lock = threading.Lock()
    state.launch_lock = threading.Lock()
    state.count_lock = threading.Lock()
    if state.fork is not None and not state.serial_only:
        state.serial_only = fork_safety(state.layer, *state.fork)
    state.in_flight = 0
    state.launchers = set()
    state.fork = None


_FORK_POLICY = {
    "tbb": "fork-safe when only the forking thread launched kernels and none was in "
    "flight; otherwise the child runs single-threaded twins",
    "workqueue": "fork-safe unless a launch was in flight (the child then runs "
    "single-threaded twins); launches hold one lock (not thread-safe)",
    "omp": "GNU OpenMP is not fork-safe: forked children run single-threaded twins",
    None: "no layer loaded yet (decided at the first parallel launch)",
}


# ------------------------------------------------------------------ settings
def _settings_changed(settings):
    if "blas_spin_exponent" in settings:
        from .threads import apply_blas_spin

        apply_blas_spin(settings["blas_spin_exponent"])


config.on_change(_settings_changed)


# ------------------------------------------------------------------ report
def _versions():
    import llvmlite
    import numpy

    from . import __version__

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "nnkernels": __version__,
    }


def _cpu():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count()
    return {"model": model, "cores": os.cpu_count(), "available": available}


def _cache_dir():
    from .activations import _relu_forward_kernel

    cache = getattr(_relu_forward_kernel.dispatcher, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    return numba.config.CACHE_DIR or path or "none (no writable location: kernels uncached)"


def runtime_info():
    """What the library found and decided in this process, as a ``dict``.

    Loads nothing: before the first parallel launch, ``threading_layer.in_use`` is None and
    ``chosen_by`` says who would decide.
    """
    from . import _blas
    from .threads import SINGLE_THREADED_BLAS_EFFECT, blas_info, spin_state

    state = _STATE
    layer = _layer_loaded()
    chosen_by = state.chosen_by if state.ready else (who_chose() or "undecided (first launch)")
    conv_ok, conv_reason = _blas.probe()
    return {
        "versions": _versions(),
        "cpu": _cpu(),
        "threading_layer": {
            "requested": state.requested if state.ready else config.get("threading_layer"),
            "in_use": layer,
            "chosen_by": chosen_by,
            "tbb_library": state.tbb_path,
            "fork_safety": _FORK_POLICY.get(layer, "unknown layer: forks untested"),
            "serial_only": state.serial_only,
            "launch_lock": layer == "workqueue",
        },
        "threads": {
            "setting": config.get("threads"),
            "numba_in_this_thread": numba.get_num_threads() if layer else None,
            "numba_maximum": numba.config.NUMBA_NUM_THREADS,
        },
        "blas": blas_info(),
        "blas_spin": spin_state(),
        "single_threaded_blas": SINGLE_THREADED_BLAS_EFFECT,
        "conv_kernels": {"available": conv_ok, "reason": conv_reason},
        "jit_cache_dir": _cache_dir(),
        "config": config.get_config(),
    }


def _lines(value, indent):
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                yield f"{pad}{key}:"
                yield from _lines(item, indent + 2)
            else:
                yield f"{pad}{key}: {item}"
    elif isinstance(value, list):
        for item in value:
            yield f"{pad}-"
            yield from _lines(item, indent + 2)
    else:
        yield f"{pad}{value}"


def show_config(file=None):
    """Print versions, CPU, threading layer, threads, BLAS, fused-kernel availability, JIT
    cache and every setting (the content of :func:`runtime_info`).

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: ``sys.stdout``).
    """
    print("\n".join(_lines(runtime_info(), 0)), file=file or sys.stdout)
