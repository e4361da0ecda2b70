"""Threads and fork, alone or beside the user's own parallel Numba code.

Each case runs in a subprocess (a threading layer is chosen once per process). The library
never starts Numba's threading layer: in ``default`` nothing starts one; otherwise the
user's own ``@njit(parallel=True)`` function starts the layer ``NUMBA_THREADING_LAYER``
names (``omp``, ``workqueue``, or ``tbb`` where installed) before the library runs. A
timeout turns a deadlock into a failure; a non-zero exit status is an abort.
"""

import subprocess

import pytest

from _subprocess_helpers import assert_ok, describe, output_line, pip_tbb_available, run_python

pytestmark = pytest.mark.slow

TIMEOUT = 240

LAYERS = [
    pytest.param(None, id="default"),
    pytest.param("workqueue", id="workqueue"),
    pytest.param("omp", id="omp"),
    pytest.param(
        "tbb",
        id="tbb",
        marks=[pytest.mark.skipif(not pip_tbb_available(), reason="Intel TBB is not installed")],
    ),
]

# Shared by the children: a Conv -> Pool -> BatchNorm stack per worker, 20 steps each.
COMMON = r"""
import os, sys, threading
import numpy as np
import numba
from numba import njit, prange

@njit(parallel=True)
def user_kernel(n):
    total = 0.0
    for i in prange(n):
        total += i
    return total

if os.environ.get("NUMBA_THREADING_LAYER"):  # the user's code starts its layer first
    user_kernel(1000)

import nnkernels
import nnkernels.runtime.jit

# small inputs would run in one share: share them over threads
FORCE = nnkernels.runtime.jit.forced_parallel()
FORCE.__enter__()  # kept referenced for the whole run
import nnlayers.layers
from nnlayers import BatchNormalization, Convolution, Pooling

N_WORKERS, N_STEPS = 4, 20
# the convolutions alternate between the fused kernels and the matmul route step by step
# (both routes give the same bits here)
ROUTES = ["kernels", "matmul"] if nnkernels.conv_kernels_available() else ["matmul"]


def make_stack(worker):
    rng = np.random.default_rng(100 + worker)
    W = rng.standard_normal((6, 3, 3, 3)) * 0.3
    conv = Convolution(W, rng.standard_normal(6), stride=1, pad=1)
    pool = Pooling(2, 2, stride=2)
    bn = BatchNormalization(rng.uniform(0.5, 1.5, 6 * 4 * 4), rng.standard_normal(6 * 4 * 4))
    return conv, pool, bn


def run_worker(worker):
    conv, pool, bn = make_stack(worker)
    rng = np.random.default_rng(worker)
    results = []
    for step in range(N_STEPS):
        conv.route = ROUTES[step % len(ROUTES)]
        x = rng.standard_normal((5, 3, 8, 8))
        out = bn.forward(pool.forward(conv.forward(x)), train_flg=True)
        dout = rng.standard_normal(out.shape)
        dx = conv.backward(pool.backward(bn.backward(dout)))
        results.append((out, dx, conv.dW, conv.db, bn.dgamma, bn.dbeta, bn.running_mean,
                        bn.running_var))
    return results


def same(a, b):
    return all(np.array_equal(u, v) for ra, rb in zip(a, b) for u, v in zip(ra, rb))
"""

THREADS_CHILD = (
    COMMON
    + r"""
import concurrent.futures as cf

serial = [run_worker(w) for w in range(N_WORKERS)]
for attempt in range(2):
    with cf.ThreadPoolExecutor(max_workers=N_WORKERS) as pool_:
        threaded = list(pool_.map(run_worker, range(N_WORKERS)))
    for w in range(N_WORKERS):
        assert same(serial[w], threaded[w]), f"worker {w} differs from serial (attempt {attempt})"
print("LAYER", nnkernels.threading_layer())
print("RESULT OK")
"""
)

FORK_CHILD = (
    COMMON
    + r"""
import multiprocessing as mp
import signal

expected = run_worker(0)      # kernels have run in the parent before any fork


def child_work():
    if not same(run_worker(0), expected):
        return 3
    # the child starts its own helper threads (where there is more than one thread)
    helpers = nnkernels.runtime_info()["threads"]["helper_threads"]
    return 0 if helpers >= 1 or nnkernels.get_num_threads() == 1 else 5


# 1) bare os.fork
pid = os.fork()
if pid == 0:
    try:
        code = child_work()
    except BaseException as exc:  # report, never return into the parent's code
        print("CHILD EXCEPTION", repr(exc), flush=True)
        code = 4
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("OSFORK", "exit" if os.WIFEXITED(status) else "signal",
      os.WEXITSTATUS(status) if os.WIFEXITED(status) else os.WTERMSIG(status), flush=True)


# 2) multiprocessing with the 'fork' start method
def target(queue):
    queue.put(child_work())


ctx = mp.get_context("fork")
queue = ctx.Queue()
procs = [ctx.Process(target=target, args=(queue,)) for _ in range(2)]
for p in procs:
    p.start()
for p in procs:
    p.join(timeout=120)
codes = []
for p in procs:
    if p.is_alive():
        p.kill()
        codes.append("hang")
    else:
        codes.append(p.exitcode)
results = [queue.get(timeout=5) for _ in range(sum(c == 0 for c in codes))]
print("MPFORK", codes, results, flush=True)
print("LAYER", nnkernels.threading_layer())
print("RESULT OK")
"""
)

FORK_WHILE_BUSY_CHILD = (
    COMMON
    + r"""
expected = run_worker(0)
stop = threading.Event()


def keep_busy(worker):
    while not stop.is_set():
        run_worker(worker)


busy = [threading.Thread(target=keep_busy, args=(w,), daemon=True) for w in (1, 2)]
for t in busy:
    t.start()
statuses = []
ATTEMPTS = int(os.environ.get("BUSY_FORK_ATTEMPTS", "5"))
for attempt in range(ATTEMPTS):
    pid = os.fork()
    if pid == 0:
        try:
            code = 3 if not same(run_worker(0), expected) else 0
        except BaseException:
            code = 4
        os._exit(code)
    # a child that hangs (a lock held by a parent thread at fork time) is killed after 8 s
    import time
    deadline = time.monotonic() + 8
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = "hang"
            break
        time.sleep(0.05)
    statuses.append(status if status == "hang" else
                    (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)))
    if statuses[-1] != 0:
        break
stop.set()
for t in busy:
    t.join()
print("STATUSES", statuses, flush=True)
print("LAYER", nnkernels.threading_layer())
assert statuses == [0] * ATTEMPTS, statuses
print("RESULT OK")
"""
)


def _layer_env(layer):
    return {"NUMBA_THREADING_LAYER": layer, "NUMBA_DISABLE_JIT": None}


def _run(code, layer):
    try:
        return run_python(code, env=_layer_env(layer), timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"deadlock: no exit within {TIMEOUT} s under threading layer {layer or 'default'}"
        )


def _expected_layer(layer):
    """The layer the library reports: the user's, or none (the library starts none)."""
    return str(layer)


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_from_several_threads_match_serial(layer):
    result = _run(THREADS_CHILD, layer)
    assert_ok(result, "RESULT OK")
    assert output_line(result, "LAYER") == _expected_layer(layer)


@pytest.mark.parametrize("layer", LAYERS)
def test_fork_after_kernels_ran(layer):
    """A child forked (bare, or by multiprocessing) after the library's helper threads ran
    gets the parent's results and starts helper threads of its own, under GNU OpenMP too:
    the library never enters the user's OpenMP pool, which a forked child cannot use."""
    result = _run(FORK_CHILD, layer)
    assert_ok(result, "RESULT OK")
    assert output_line(result, "LAYER") == _expected_layer(layer)
    assert output_line(result, "OSFORK") == "exit 0", describe(result)
    assert output_line(result, "MPFORK") == "[0, 0] [0, 0]", describe(result)


@pytest.mark.parametrize("layer", LAYERS)
def test_fork_while_other_threads_run_kernels(layer):
    """A fork while other Python threads are inside kernels: the child inherits no held lock
    (the at-fork hook gives it fresh ones and no helper threads) and computes the same."""
    result = _run(FORK_WHILE_BUSY_CHILD, layer)
    assert_ok(result, "RESULT OK")
    assert output_line(result, "STATUSES") == "[0, 0, 0, 0, 0]", describe(result)
