"""Convolution's samples shared over threads (``nnkernels.sample_parts``), the single-threaded
BLAS and kernel switches it relies on, and that sharing changes no result."""

import os
import threading

import numba
import numpy as np
import pytest

import nnkernels
import nnlayers
from _subprocess_helpers import assert_ok, output_line, run_python
from nnkernels import _jit, activations
from nnkernels import sample_parts as _products
from nnkernels.conv_routes import ScratchPool
from nnkernels.threads import single_threaded_blas, single_threaded_kernels
from nnlayers import reference

threadpoolctl = pytest.importorskip("threadpoolctl")
NUMPY_ON_OPENBLAS = any(
    info["internal_api"] == "openblas" for info in threadpoolctl.threadpool_info()
)
TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2


def blas_threads():
    """Thread counts of the OpenBLAS builds ``single_threaded_blas`` controls (NumPy's; a
    SciPy imported later brings its own, which NumPy's products do not use)."""
    from nnkernels import threads as thread_module

    with single_threaded_blas():  # makes sure the controlled libraries are known
        pass
    return [get_fn() for _, get_fn in thread_module._SINGLE_BLAS["setters"]]


@pytest.fixture
def threads():
    previous = nnkernels.get_num_threads()
    yield nnkernels.set_num_threads
    nnkernels.set_num_threads(previous)


@pytest.fixture
def always_split():
    with nnkernels.config_context(split_min_macs=0):
        yield


# ------------------------------------------------------------------ the switches
@pytest.mark.skipif(not NUMPY_ON_OPENBLAS, reason="NumPy's BLAS is not OpenBLAS")
def test_single_threaded_blas_restores_the_count_after_nested_and_concurrent_blocks(threads):
    threads(2 if TWO_THREADS else 1)
    before = blas_threads()
    inside, entered, release = [], threading.Barrier(2), threading.Event()

    def other():
        with single_threaded_blas():
            entered.wait()
            release.wait()

    helper = threading.Thread(target=other)
    helper.start()
    with single_threaded_blas() as single:
        entered.wait()
        with single_threaded_blas():
            inside.append(blas_threads())
        inside.append(blas_threads())
    inside.append(blas_threads())  # the other block is still open
    release.set()
    helper.join()
    assert single is True
    assert inside == [[1] * len(before)] * 3
    assert blas_threads() == before


FORK_INSIDE_A_BLOCK = """
    import os, threading
    from threadpoolctl import threadpool_info
    import nnkernels
    from nnkernels.threads import single_threaded_blas
    nnkernels.set_num_threads(2)
    blas = lambda: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    before = blas()
    entered, release = threading.Event(), threading.Event()
    def hold():
        with single_threaded_blas():
            entered.set()
            release.wait()
    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait()
    pid = os.fork()
    if pid == 0:  # the child: no thread will leave the parent's block here
        ok = blas() == before
        with single_threaded_blas():  # the lock must be free, the block must work
            ok = ok and blas() == [1] * len(before)
        ok = ok and blas() == before
        os._exit(0 if ok else 3)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status))
    print("parent", blas() == before)
"""


@pytest.mark.skipif(
    not (NUMPY_ON_OPENBLAS and TWO_THREADS and hasattr(os, "fork")),
    reason="needs OpenBLAS, 2 threads and fork",
)
def test_a_child_forked_inside_a_block_gets_its_blas_threads_back():
    result = run_python(FORK_INSIDE_A_BLOCK, timeout=120)
    assert_ok(result)
    assert output_line(result, "child") == "0"
    assert output_line(result, "parent") == "True"


@pytest.mark.skipif(not (NUMPY_ON_OPENBLAS and TWO_THREADS), reason="needs OpenBLAS, 2 threads")
def test_set_num_threads_sets_the_blas_count_from_any_thread(threads):
    """A sweep trial in a worker thread sets its BLAS threads after the main thread did."""
    threads(2)
    seen = []
    helper = threading.Thread(target=lambda: (threads(1), seen.append(blas_threads())))
    helper.start()
    helper.join()
    assert seen == [[1] * len(blas_threads())] and blas_threads() == seen[0]
    threads(2)
    assert blas_threads() == [2] * len(blas_threads())


def test_single_threaded_kernels_affects_only_the_calling_thread():
    kernel = activations._relu_forward_kernel
    big = 1 << 20
    seen = {}

    def other():
        seen["other"] = kernel.sized(big)

    with single_threaded_kernels():
        seen["inside"] = kernel.sized(big)
        helper = threading.Thread(target=other)
        helper.start()
        helper.join()
    seen["after"] = kernel.sized(big)
    assert seen["inside"] is kernel.serial
    assert seen["other"] is kernel and seen["after"] is kernel
    with _jit.forced_parallel(), single_threaded_kernels():
        assert kernel.sized(big) is kernel  # the process-wide switch (precompile, tests) wins


# ------------------------------------------------------------------ sample_parts / run_parts
SPLIT = nnkernels.get_config()["split_min_macs"]


def test_parts_cover_the_samples_in_order(threads):
    threads(2 if TWO_THREADS else 1)
    parts = _products.sample_parts(0, 7, SPLIT)
    assert parts[0][0] == 0 and parts[-1][1] == 7
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert len(parts) == (2 if TWO_THREADS else 1)
    offset = _products.sample_parts(10, 17, SPLIT)
    assert offset == [(lo + 10, hi + 10) for lo, hi in parts]
    assert _products.sample_parts(0, 7, SPLIT - 1) == [(0, 7)]
    assert _products.sample_parts(3, 4, 1 << 40) == [(3, 4)]
    threads(1)
    assert _products.sample_parts(0, 7, 1 << 40) == [(0, 7)]


@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
def test_an_exception_in_a_helper_part_reaches_the_caller(threads):
    threads(2)
    done = []

    def work(index, lo, hi, stop):
        if index == 1:
            raise ValueError(f"part {index} failed")
        done.append((lo, hi))

    with pytest.raises(ValueError, match="part 1 failed"):
        _products.run_parts([(0, 3), (3, 6)], work)
    assert done == [(0, 3)]
    if NUMPY_ON_OPENBLAS:
        assert blas_threads() == [2] * len(blas_threads())  # restored despite the error


@pytest.mark.skipif(not (TWO_THREADS and NUMPY_ON_OPENBLAS), reason="needs 2 threads, OpenBLAS")
def test_helper_threads_persist_and_every_part_runs_once():
    seen = []
    lock = threading.Lock()

    def work(index, lo, hi, stop):
        with lock:
            seen.append((index, lo, hi, threading.current_thread().name))

    for _ in range(21):
        _products.run_parts([(0, 2), (2, 4)], work)
    # one thread per call would have given 20 or so distinct helpers
    helpers = {name for *_, name in seen if name != threading.current_thread().name}
    assert all(name.startswith("nnkernels-part") for name in helpers)
    assert len(helpers) <= _products._HELPERS.size
    assert sorted((i, lo, hi) for i, lo, hi, _ in seen) == sorted([(0, 0, 2), (1, 2, 4)] * 21)


@pytest.mark.skipif(not (TWO_THREADS and NUMPY_ON_OPENBLAS), reason="needs 2 threads, OpenBLAS")
def test_nested_and_concurrent_calls_do_not_wait_on_each_others_helpers():
    """A part that shares its own work again finds the helper busy (with itself): the calling
    thread then runs the queued part. Bounded by a timeout instead of hanging."""
    done = []

    def inner(index, lo, hi, stop):
        done.append(("inner", lo, hi))

    def outer(index, lo, hi, stop):
        _products.run_parts([(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)], inner)
        done.append(("outer", lo, hi))

    def both():
        _products.run_parts([(0, 4), (4, 8)], outer)

    callers = [threading.Thread(target=both, daemon=True) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=60)
    assert not any(caller.is_alive() for caller in callers), "run_parts deadlocked"
    assert sorted(done) == sorted(
        [("inner", 0, 2), ("inner", 2, 4), ("inner", 4, 6), ("inner", 6, 8)] * 3
        + [("outer", 0, 4), ("outer", 4, 8)] * 3
    )


FORK_AFTER_HELPERS = """
    import os
    from nnkernels.sample_parts import run_parts
    seen = []
    work = lambda index, lo, hi, stop: seen.append(index)
    run_parts([(0, 1), (1, 2)], work)          # the parent's helper thread exists
    pid = os.fork()
    if pid == 0:
        run_parts([(0, 1), (1, 2)], work)      # the child has no helper: it starts its own
        os._exit(0 if sorted(seen) == [0, 0, 1, 1] else 3)
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(
    not (TWO_THREADS and NUMPY_ON_OPENBLAS and hasattr(os, "fork")),
    reason="needs 2 threads, OpenBLAS and fork",
)
def test_a_forked_child_shares_work_over_helpers_of_its_own():
    result = run_python(FORK_AFTER_HELPERS, timeout=120)
    assert_ok(result)
    assert output_line(result, "child") == "0"


# ------------------------------------------------------------------ Convolution
CASES = [  # N, C, H, W, FN, FH, FW, stride, pad
    (5, 3, 9, 7, 4, 3, 2, 1, 1),
    (6, 2, 8, 8, 3, 3, 3, 2, 0),
    (3, 4, 6, 5, 5, 1, 1, 1, 0),
]


def _conv_step(case, dtype, limit=None):
    N, C, H, W, FN, FH, FW, stride, pad = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    weights = (0.3 * rng.standard_normal((FN, C, FH, FW))).astype(dtype)
    bias = rng.standard_normal(FN).astype(dtype)
    previous = nnlayers.get_workspace_limit()
    nnlayers.set_workspace_limit(limit)
    try:
        layer = nnlayers.Convolution(weights, bias, stride, pad)
        out = layer.forward(x).copy()
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = layer.backward(dout).copy()
    finally:
        nnlayers.set_workspace_limit(previous)
    return (x, weights, bias, dout), {"out": out, "dx": dx, "dW": layer.dW, "db": layer.db}


def _assert_shared_gives_the_one_thread_bits(threads, case, dtype, limit):
    """Convolution with 1 and 2 threads: the same bits, and close to the reference."""
    threads(1)
    _, alone = _conv_step(case, dtype, limit)
    threads(2)
    inputs, shared = _conv_step(case, dtype, limit)
    for name in alone:
        np.testing.assert_array_equal(shared[name], alone[name], err_msg=name)
    x, weights, bias, dout = inputs
    ref = reference.Convolution(weights, bias, case[7], case[8])
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    np.testing.assert_allclose(shared["out"], ref.forward(x), **tol)
    np.testing.assert_allclose(shared["dx"], ref.backward(dout), **tol)
    np.testing.assert_allclose(shared["dW"], ref.dW, **tol)
    np.testing.assert_allclose(shared["db"], ref.db, **tol)
    return inputs


@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
@pytest.mark.parametrize("limit", [None, 600], ids=["whole-batch", "workspace-bound"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_shared_samples_give_the_one_thread_bits(
    threads, always_split, case, dtype, limit, conv_route
):
    _assert_shared_gives_the_one_thread_bits(threads, case, dtype, limit)


@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_take_their_share_in_chunks_of_several_samples(
    threads, always_split, dtype, monkeypatch
):
    case = (13, 2, 6, 5, 3, 3, 3, 1, 1)  # stride 1, same padding: P = H * W
    N, C, H, W, FN, FH, FW, stride, pad = case
    per_sample = C * FH * FW * H * W * np.dtype(dtype).itemsize
    # under the batch's 13 samples, so chunked; per thread 12 // (2 buffers x 2 threads) = 3
    # samples a chunk: shares of 6 and 7 run as 3 + 3 and 3 + 3 + 1
    limit = 12 * per_sample
    with nnkernels.config_context(conv_route="matmul"):  # the matmul route's chunks
        x, weights, bias, _ = _assert_shared_gives_the_one_thread_bits(threads, case, dtype, limit)

    taken = []
    original_take = ScratchPool.take

    def take(pool, shape, dtype):
        taken.append(shape)
        return original_take(pool, shape, dtype)

    monkeypatch.setattr(ScratchPool, "take", take)
    with nnkernels.config_context(workspace_limit=limit):
        layer = nnlayers.Convolution(weights, bias, stride, pad, route="matmul")
        out = layer.forward(x)
        assert taken == [(3, C * FH * FW, H * W)] * 2  # one chunk buffer per thread
        layer.backward(np.ones_like(out))
        assert taken.count((3, C * FH * FW, H * W)) == 2 + 4  # dcols and columns per thread
