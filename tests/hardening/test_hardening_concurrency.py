"""Threads and fork under every Numba threading layer available here.

Each case runs in a subprocess (the threading layer is chosen once per process) with
``NUMBA_THREADING_LAYER`` set to ``omp``, ``workqueue`` or ``tbb``, or unset (the library's
own choice: TBB when pip's TBB is installed, else Numba's, GNU OpenMP). A timeout turns a
deadlock into a failure; a non-zero exit status is an abort.
"""

import subprocess

import pytest

from _subprocess_helpers import assert_ok, describe, output_line, pip_tbb_available, run_python

pytestmark = pytest.mark.slow

TIMEOUT = 240

TBB_SKIP = pytest.mark.skipif(
    not pip_tbb_available(), reason="Intel TBB is not installed (pip install 'nnkernels[tbb]')"
)

LAYERS = [
    pytest.param(None, id="default"),
    pytest.param("workqueue", id="workqueue"),
    pytest.param("omp", id="omp"),
    pytest.param("tbb", id="tbb", marks=[TBB_SKIP]),
]

# Shared by the children: a Conv -> Pool -> BatchNorm stack per worker, 20 steps each.
COMMON = r"""
import os, sys, threading
import numpy as np
import numba
import nnkernels
import nnkernels.runtime.jit

# small inputs would run the kernels' single-threaded twins: force the threaded ones
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
print("LAYER", numba.threading_layer())
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
    # 6: the child runs single-threaded twins (GNU OpenMP); otherwise only the main thread
    # launched, so the child stays parallel
    return 6 if nnkernels.runtime_info()["threading_layer"]["serial_only"] else 0


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
print("LAYER", numba.threading_layer())
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
            serial = nnkernels.runtime_info()["threading_layer"]["serial_only"]
            code = 3 if not same(run_worker(0), expected) else (1 if serial else 0)
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
    if statuses[-1] not in (0, 1):
        break
stop.set()
for t in busy:
    t.join()
print("STATUSES", statuses, flush=True)
print("LAYER", numba.threading_layer())
assert len(statuses) == ATTEMPTS and set(statuses) <= {0, 1}, statuses
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
    if layer is not None:
        return layer
    return "tbb" if pip_tbb_available() else "omp"  # the library's choice, else Numba's


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_from_several_threads_match_serial(layer):
    result = _run(THREADS_CHILD, layer)
    assert_ok(result, "RESULT OK")
    assert output_line(result, "LAYER") == _expected_layer(layer)


FORK_LAYERS = [
    pytest.param(None, id="default"),
    pytest.param("workqueue", id="workqueue"),
    pytest.param("tbb", id="tbb", marks=[TBB_SKIP]),
]


@pytest.mark.parametrize("layer", FORK_LAYERS)
def test_fork_after_kernels_ran(layer):
    result = _run(FORK_CHILD, layer)
    assert_ok(result, "RESULT OK")
    assert output_line(result, "LAYER") == _expected_layer(layer)
    if _expected_layer(layer) == "omp":  # see the next test
        assert output_line(result, "OSFORK") == "exit 6", describe(result)
        assert output_line(result, "MPFORK") == "[0, 0] [6, 6]", describe(result)
        return
    assert output_line(result, "OSFORK") == "exit 0", describe(result)
    assert output_line(result, "MPFORK") == "[0, 0] [0, 0]", describe(result)


def test_fork_after_kernels_ran_under_gnu_openmp():
    """GNU OpenMP kills a forked child's first parallel region ("Terminating: fork() called
    from a process already using GNU OpenMP"): the library's children run single-threaded
    twins instead (exit status 6 here), with the same results."""
    result = _run(FORK_CHILD, "omp")
    assert_ok(result, "RESULT OK")
    assert output_line(result, "LAYER") == "omp"
    assert output_line(result, "OSFORK") == "exit 6", describe(result)
    assert output_line(result, "MPFORK") == "[0, 0] [6, 6]", describe(result)


# Under TBB a child forked while other threads have launched kernels could hang on its first
# parallel launch (TBB cannot join its workers before fork(): seen about 1 fork in 15 before
# the library handled it), so such a child runs the single-threaded twins: exit status 1
# below. Under any layer, so does a child forked while a launch was in flight (the at-fork
# hooks never wait for it); under workqueue other children keep their threads: status 0.


@pytest.mark.parametrize("layer", FORK_LAYERS)
def test_fork_while_other_threads_run_kernels(layer):
    """A fork while other Python threads are inside kernels: the child inherits no held lock."""
    result = _run(FORK_WHILE_BUSY_CHILD, layer)
    assert_ok(result, "RESULT OK")
    statuses = output_line(result, "STATUSES")
    if _expected_layer(layer) == "tbb":  # the first fork may come before the threads launched
        assert statuses in ("[0, 1, 1, 1, 1]", "[1, 1, 1, 1, 1]"), describe(result)


def test_tbb_requested_by_environment_works_when_pip_tbb_is_installed():
    """``NUMBA_THREADING_LAYER=tbb`` with pip's TBB installed: the library loads libtbb."""
    if not pip_tbb_available():
        pytest.skip("Intel TBB is not installed (pip install 'nnkernels[tbb]')")
    result = _run(
        """
        import numpy as np, nnkernels
        nnkernels.set_config(parallel_threshold=0)  # a tiny input would run the serial twin
        nnkernels.im2col(np.ones((1, 1, 3, 3)), 2, 2)
        print("LAYER", nnkernels.threading_layer())
        """,
        "tbb",
    )
    assert_ok(result)
    assert output_line(result, "LAYER") == "tbb"
