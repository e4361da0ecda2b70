"""Kernel launches: the threading layer, launches from several threads, and fork safety.

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
* registers the at-fork hooks (:mod:`.process`).

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
import sys
import threading

import numba

from .. import config
from .process import STATE, watch_forks

__all__ = [
    "ensure_ready",
    "fork_safety",
    "launch",
    "layer_loaded",
    "threading_layer",
    "who_chose",
    "FORK_POLICY",
]

#: Numba's threading-layer priority when nobody changed it
NUMBA_DEFAULT_PRIORITY = ("tbb", "omp", "workqueue")
_TBB_REQUESTS = ("tbb", "safe", "threadsafe")


def _env_choice():
    for name in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"):
        if os.environ.get(name):
            return f"the user ({name}={os.environ[name]})"
    return None


def layer_loaded():
    """The layer Numba loaded in this process, or None (never loads one)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def who_chose():
    """Who decided the threading layer before the library's first launch, or None."""
    if layer_loaded() is not None:
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
    if STATE.layer.tbb_path:
        return STATE.layer.tbb_path
    for path in _pip_tbb_paths():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        except OSError:
            continue
        STATE.layer.tbb_path = path
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
    state = STATE.layer
    state.chosen_by = who_chose()
    if state.chosen_by is not None:
        if layer_loaded() is None and _user_requests_tbb():
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
    state = STATE.layer
    if state.ready:
        return
    with state.ready_lock:
        if state.ready:
            return
        _decide_layer()
        state.layer = layer_loaded()
        state.locked_launches = state.layer == "workqueue"
        watch_forks()
        state.ready = True


def launch(kernel, args):
    """Run a parallel kernel's dispatcher on ``args`` (see the module docstring)."""
    state = STATE.layer
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


STATE.fork_safety = fork_safety

#: what a forked child of each layer does (``show_config``)
FORK_POLICY = {
    "tbb": "fork-safe when only the forking thread launched kernels and none was in "
    "flight; otherwise the child runs single-threaded twins",
    "workqueue": "fork-safe unless a launch was in flight (the child then runs "
    "single-threaded twins); launches hold one lock (not thread-safe)",
    "omp": "GNU OpenMP is not fork-safe: forked children run single-threaded twins",
    None: "no layer loaded yet (decided at the first parallel launch)",
}


def threading_layer():
    """Name of the Numba threading layer in use (``None`` before any parallel kernel ran)."""
    return layer_loaded()
