"""The runtime (``nnkernels.runtime``): importing and running change nothing of the user's
(no Numba threading layer is started, the user's own layer and priority are kept),
``show_config`` reports, and forks and threads are safe (issue 17, cases 1-5).

Every case runs in a fresh interpreter with a timeout: a threading layer is loaded once
per process, and a hang must become a failure.
"""

import ast
import os
import subprocess

import pytest

from _subprocess_helpers import assert_ok, describe, output_line, pip_tbb_available, run_python

pytestmark = pytest.mark.slow

TIMEOUT = 240
ENV = {
    "NUMBA_DISABLE_JIT": None,
    "NUMBA_THREADING_LAYER": None,
    "NUMBA_THREADING_LAYER_PRIORITY": None,
    "OPENBLAS_THREAD_TIMEOUT": None,
}

#: an interpreter of an environment without Intel TBB (this one, when it has none)
WITHOUT_TBB = os.environ.get("NNKERNELS_PYTHON_WITHOUT_TBB") or (
    None if pip_tbb_available() else "python"
)


def _run(code, timeout=TIMEOUT, env=None, executable=None):
    try:
        return run_python(code, env={**ENV, **(env or {})}, timeout=timeout, executable=executable)
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: no exit within {timeout} s")


# a few layers, with inputs large enough to launch the multi-threaded kernels
LAYERS = r"""
import numpy as np
import nnlayers

def run_layers(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 3, 32, 32))
    conv = nnlayers.Convolution(rng.standard_normal((6, 3, 3, 3)), rng.standard_normal(6), 1, 1)
    pool = nnlayers.Pooling(2, 2, 2)
    bn = nnlayers.BatchNormalization(np.ones(6 * 16 * 16), np.zeros(6 * 16 * 16))
    relu = nnlayers.Relu()
    out = relu.forward(bn.forward(pool.forward(conv.forward(x)), train_flg=True))
    dx = conv.backward(pool.backward(bn.backward(relu.backward(np.ones_like(out)))))
    return [out, dx, conv.dW, conv.db]

def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))
"""


# ------------------------------------------------------------------ A: no side effects
NO_SIDE_EFFECTS = (
    r"""
import io, os
import numba
import numba.np.ufunc.parallel as parallel
from threadpoolctl import threadpool_info

def state():
    with open("/proc/self/maps") as maps:
        tbb = "libtbb" in maps.read()
    return (numba.config.THREADING_LAYER, list(numba.config.THREADING_LAYER_PRIORITY),
            dict(os.environ), tbb, parallel._is_initialized,
            [(i["filepath"], i["num_threads"]) for i in threadpool_info()])

before = state()
import nnkernels, nnlayers
print("IMPORT", before == state())
info = nnkernels.runtime_info()
nnkernels.show_config(file=io.StringIO())
print("SHOW", before == state())
print("LAYER", info["threads"]["numba_threading_layer"])
"""
    + LAYERS
    + r"""
run_layers()
after = state()
# New pools: the library's own BLAS (scipy_openblas32), loaded by its first product, and
# SciPy's, which Numba's compiler imports at its first compile where SciPy is installed.
# The pools there before keep their thread counts.
new = [i for i in after[-1] if i not in before[-1]]
print("RUN", before[:-1] == after[:-1] and set(before[-1]) <= set(after[-1]))
print("NEW", all("scipy_openblas32" in path or "scipy.libs" in path for path, _ in new))
"""
)


def test_import_show_config_and_layers_change_nothing():
    """Importing, reporting and running layers start no Numba threading layer, load no
    threading library and change no setting, environment variable or BLAS pool."""
    result = _run(NO_SIDE_EFFECTS)
    assert_ok(result)
    assert output_line(result, "IMPORT") == "True"
    assert output_line(result, "SHOW") == "True"
    assert output_line(result, "LAYER") == "None"
    assert output_line(result, "RUN") == "True", describe(result)
    assert output_line(result, "NEW") == "True", describe(result)


USER_PROCESS = (
    LAYERS
    + r"""
import os, sys, time
import numba
from numba import njit, prange
from threadpoolctl import threadpool_info

numba.config.THREADING_LAYER = sys.argv[1]  # the user's choice

@njit(parallel=True)
def user_kernel(a):
    total = 0.0
    for i in prange(a.size):
        total += np.sqrt(a[i]) * np.sin(a[i])
    return total

a = np.random.default_rng(3).random(4_000_000)

def best_time():
    times = []
    for _ in range(20):
        start = time.perf_counter()
        user_kernel(a)
        times.append(time.perf_counter() - start)
    return min(times)

def state():
    # the library's own BLAS (scipy_openblas32) appears once loaded: only the others count
    return (numba.threading_layer(), numba.config.THREADING_LAYER,
            list(numba.config.THREADING_LAYER_PRIORITY), numba.get_num_threads(),
            [(i["filepath"], i["num_threads"]) for i in threadpool_info()
             if "scipy_openblas32" not in i["filepath"]],
            {k: v for k, v in os.environ.items() if k.startswith(("NUMBA", "OPENBLAS", "OMP"))})

result = user_kernel(a)
before, time_before = state(), best_time()
import nnkernels
run_layers()
print("LIBRARY_LAYER", nnkernels.threading_layer())
print("STATE", before == state())
print("RESULT", user_kernel(a) == result)
print("SPEED", best_time() / time_before)
"""
)


@pytest.mark.parametrize("layer", ["workqueue", "omp"])
def test_users_own_parallel_code_is_unchanged(layer):
    """A process running its own ``@njit(parallel=True)`` code under a chosen layer: after
    importing the library and running layers, that code's settings, results and speed are
    unchanged, and the library runs under the user's layer."""
    result = run_python(USER_PROCESS, env=ENV, timeout=TIMEOUT, args=(layer,))
    assert_ok(result)
    assert output_line(result, "LIBRARY_LAYER") == layer
    assert output_line(result, "STATE") == "True"
    assert output_line(result, "RESULT") == "True"
    assert float(output_line(result, "SPEED")) < 1.5, describe(result)


# ------------------------------------------------------------------ B: show_config
SHOW = (
    LAYERS
    + r"""
import io, json
import nnkernels
before = nnkernels.runtime_info()
run_layers()
after = nnkernels.runtime_info()
text = io.StringIO()
nnkernels.show_config(file=text)
print("BEFORE", json.dumps(before["threads"]))
print("AFTER", json.dumps(after["threads"]))
print("KEYS", sorted(after))
print("CONFIG", after["config"] == nnkernels.get_config())
words = ("numba", "threads", "helper_threads", "blas", "jit_cache_dir")
print("PRINTED", all(word in text.getvalue() for word in words))
print("CONV", json.dumps(after["conv_kernels"]))
print("BLAS", json.dumps(after["blas"]))
"""
)


def test_runtime_info_and_show_config():
    import json

    result = _run(SHOW)
    assert_ok(result)
    before, after = (
        json.loads(output_line(result, "BEFORE")),
        json.loads(output_line(result, "AFTER")),
    )
    assert before["numba_threading_layer"] is None is after["numba_threading_layer"]
    assert before["helper_threads"] == 0
    assert after["helper_threads"] == after["in_this_thread"] - 1
    assert output_line(result, "KEYS") == str(
        sorted(
            [
                "versions",
                "cpu",
                "threads",
                "blas",
                "numpy_blas",
                "conv_kernels",
                "jit_cache_dir",
                "config",
            ]
        )
    )
    assert output_line(result, "CONFIG") == "True"
    assert output_line(result, "PRINTED") == "True"
    conv = json.loads(output_line(result, "CONV"))
    assert conv["reason"] and conv["available"] is not None


# ------------------------------------------------------------------ issue 17
BUSY_BLAS_IMPORT = (
    r"""
import threading, time
import numpy as np
a = np.random.default_rng(0).standard_normal((1200, 1200))
stop = threading.Event()

def products():
    while not stop.is_set():
        a @ a

other = threading.Thread(target=products)
other.start()
time.sleep(0.3)
"""
    + LAYERS
    + r"""
import nnkernels
run_layers()
stop.set()
other.join()
print("DONE")
"""
)


@pytest.mark.parametrize("attempt", range(3))
def test_case1_import_while_another_thread_multiplies(attempt):
    assert_ok(_run(BUSY_BLAS_IMPORT, timeout=120), "DONE")


USER_THREADS = (
    r"""
import threading
import numpy as np
import numba
from numba import njit, prange

@njit(parallel=True)
def user_kernel(a):
    total = 0.0
    for i in prange(a.size):
        total += a[i] * 2.0
    return total

def from_two_threads():
    a = np.ones(1_000_000)
    results = []
    threads = [threading.Thread(target=lambda: results.extend(user_kernel(a) for _ in range(50)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return set(results) == {2e6}
"""
    + LAYERS
    + r"""
import nnlayers
run_layers()
print("TWO_THREADS", from_two_threads(), numba.threading_layer())
"""
)


@pytest.mark.skipif(
    WITHOUT_TBB is None,
    reason="set NNKERNELS_PYTHON_WITHOUT_TBB to an interpreter of an environment without TBB",
)
def test_case2_users_code_from_two_threads_survives_without_tbb():
    result = _run(USER_THREADS, executable=None if WITHOUT_TBB == "python" else WITHOUT_TBB)
    assert_ok(result)
    assert output_line(result, "TWO_THREADS").startswith("True")


USER_PRIORITY = (
    r"""
import numba
from numba import njit, prange
numba.config.THREADING_LAYER_PRIORITY = ["workqueue", "tbb", "omp"]

@njit(parallel=True)
def user_kernel(n):
    total = 0
    for i in prange(n):
        total += i
    return total
"""
    + LAYERS
    + r"""
import nnkernels
run_layers()
user_kernel(1000)
print("PRIORITY", numba.config.THREADING_LAYER_PRIORITY)
print("LAYER", numba.threading_layer(), nnkernels.threading_layer())
"""
)


def test_case3_users_priority_is_kept():
    """The library's layers run first; the user's code then starts the layer its own
    priority names, and the library reports that layer."""
    result = _run(USER_PRIORITY)
    assert_ok(result)
    assert output_line(result, "PRIORITY") == "['workqueue', 'tbb', 'omp']"
    assert output_line(result, "LAYER") == "workqueue workqueue"


OMP_THEN_FORK = (
    r"""
import os
import numba
numba.set_num_threads(2)  # starts Numba's pool before the library is imported
"""
    + LAYERS
    + r"""
import nnkernels
expected = run_layers()
print("LAYER", numba.threading_layer())
pid = os.fork()
if pid == 0:
    try:
        code = 0 if same(run_layers(), expected) else 3
    except BaseException:
        code = 4
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status))
"""
)


def test_case4_fork_child_survives_a_layer_started_before_import():
    """The user's code started Numba's pool (GNU OpenMP here, which a forked child cannot
    use) before the library ran: a forked child still runs the layers, on threads of the
    library's own."""
    result = _run(OMP_THEN_FORK, env={"NUMBA_NUM_THREADS": "2"})
    assert_ok(result)
    assert output_line(result, "CHILD") == "0", describe(result)


# a pooling layer called in a loop while SIGALRM handlers fork, FORKS times
SIGNAL_FORKS = (
    r"""
import os, signal, time
"""
    + LAYERS
    + r"""
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 3, 64, 64))
pool = nnlayers.Pooling(2, 2, 2)
expected = pool.forward(x)
statuses = []
"""
)

FORK_IN_SIGNAL_HANDLER = (
    SIGNAL_FORKS
    + r"""
FORKS = 200

def fork_now(signum, frame):
    if len(statuses) >= FORKS:
        return
    pid = os.fork()
    if pid == 0:
        try:
            ok = np.array_equal(nnlayers.Pooling(2, 2, 2).forward(x), expected)
        except BaseException as exc:
            print("CHILD EXCEPTION", repr(exc), flush=True)
            os._exit(4)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    statuses.append(os.waitstatus_to_exitcode(status))
    signal.setitimer(signal.ITIMER_REAL, 0.0007)  # the next one, once this one is done

signal.signal(signal.SIGALRM, fork_now)
signal.setitimer(signal.ITIMER_REAL, 0.0007)
deadline = time.monotonic() + 100
while len(statuses) < FORKS and time.monotonic() < deadline:
    pool.forward(x)
signal.setitimer(signal.ITIMER_REAL, 0)
print("STATUSES", statuses)
"""
)


def test_case5_fork_in_a_signal_handler_during_a_kernel():
    """Forks land while the calling thread hands parts to the helpers, as well as inside
    kernels: a pool whose hand-over holds a lock that a fork hook takes hangs here."""
    result = _run(FORK_IN_SIGNAL_HANDLER, timeout=120)
    assert_ok(result)
    assert output_line(result, "STATUSES") == str([0] * 200)


FORK_THEN_CHILD_CONTINUES = (
    SIGNAL_FORKS
    + r"""
FORKS = 100
in_child = False

def fork_now(signum, frame):
    global in_child
    if in_child or len(statuses) >= FORKS:
        return
    pid = os.fork()
    if pid == 0:
        in_child = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        return  # the child goes on with the call the signal interrupted
    _, status = os.waitpid(pid, 0)
    statuses.append(os.waitstatus_to_exitcode(status))
    signal.setitimer(signal.ITIMER_REAL, 0.0007)

signal.signal(signal.SIGALRM, fork_now)
signal.setitimer(signal.ITIMER_REAL, 0.0007)
deadline = time.monotonic() + 100
while len(statuses) < FORKS and time.monotonic() < deadline:
    try:
        out = pool.forward(x)
        code = 0 if np.array_equal(out, expected) else 3
    except RuntimeError as exc:
        if not in_child or "forked" not in str(exc):
            raise
        code = 5
    if in_child:
        again = np.array_equal(pool.forward(x), expected)
        os._exit(code if again else 3)
signal.setitimer(signal.ITIMER_REAL, 0)
print("STATUSES", sorted(set(statuses)))
print("FORKS", len(statuses))
"""
)


def test_a_child_that_goes_on_with_the_interrupted_call_gets_its_result_or_an_error():
    """The child of a fork from a signal handler returns into the call the signal
    interrupted: it finishes with the right result, or, where part of the call was on a
    helper thread (which the child does not have), raises a RuntimeError saying so; never
    hangs, never returns a wrong result; and its next call is right."""
    result = _run(FORK_THEN_CHILD_CONTINUES, timeout=120)
    assert_ok(result)
    assert output_line(result, "FORKS") == "100"
    assert set(ast.literal_eval(output_line(result, "STATUSES"))) <= {0, 5}, describe(result)


def test_threads_setting_applies_to_launches_only():
    import numba
    import numpy as np

    import nnkernels

    x = np.random.default_rng(0).standard_normal((4, 3, 40, 40))
    expected = nnkernels.im2col(x, 3, 3, 1, 1)
    before = numba.get_num_threads()
    with nnkernels.config_context(threads=1):
        assert nnkernels.get_num_threads() == 1
        np.testing.assert_array_equal(nnkernels.im2col(x, 3, 3, 1, 1), expected)
    assert numba.get_num_threads() == before == nnkernels.get_num_threads()
