"""How work is shared over threads (``nnkernels.runtime.partition`` and ``.helpers``), the
single-threaded kernel switch it relies on, and that sharing changes no result."""

import os
import threading

import numba
import numpy as np
import pytest

import nnkernels
import nnlayers
from _subprocess_helpers import assert_ok, output_line, run_python
from nnkernels.engine.convolution import ScratchPool
from nnkernels.runtime import helpers, jit, partition
from nnkernels.runtime.jit import serial_in_this_thread as single_threaded_kernels
from nnkernels.runtime.process import STATE
from nnlayers import reference

TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2


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
def test_single_threaded_kernels_affects_only_the_calling_thread():
    big = 1 << 40
    seen = {}

    def other():
        seen["other"] = jit.one_share(big)

    with single_threaded_kernels():
        seen["inside"] = jit.one_share(big)
        helper = threading.Thread(target=other)
        helper.start()
        helper.join()
    seen["after"] = jit.one_share(big)
    assert seen == {"inside": True, "other": False, "after": False}
    with jit.forced_parallel(), single_threaded_kernels():
        assert not jit.one_share(big)  # the process-wide switch (precompile, tests) wins


# ------------------------------------------------------------------ sample_parts / run_parts
SPLIT = nnkernels.get_config()["split_min_macs"]


def test_parts_cover_the_samples_in_order(threads):
    threads(2 if TWO_THREADS else 1)
    parts = partition.sample_parts(0, 7, SPLIT)
    assert parts[0][0] == 0 and parts[-1][1] == 7
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert len(parts) == (2 if TWO_THREADS else 1)
    offset = partition.sample_parts(10, 17, SPLIT)
    assert offset == [(lo + 10, hi + 10) for lo, hi in parts]
    assert partition.sample_parts(0, 7, SPLIT - 1) == [(0, 7)]
    assert partition.sample_parts(3, 4, 1 << 40) == [(3, 4)]
    threads(1)
    assert partition.sample_parts(0, 7, 1 << 40) == [(0, 7)]


@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
def test_an_exception_in_a_helper_part_reaches_the_caller(threads):
    threads(2)
    done = []

    def work(index, lo, hi, stop):
        if index == 1:
            raise ValueError(f"part {index} failed")
        done.append((lo, hi))

    with pytest.raises(ValueError, match="part 1 failed"):
        helpers.run_parts([(0, 3), (3, 6)], work)
    assert done == [(0, 3)]


@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
def test_helper_threads_persist_and_every_part_runs_once():
    seen = []
    lock = threading.Lock()

    def work(index, lo, hi, stop):
        with lock:
            seen.append((index, lo, hi, threading.current_thread().name))

    for _ in range(21):
        helpers.run_parts([(0, 2), (2, 4)], work)
    # one thread per call would have given 20 or so distinct helpers
    names = {name for *_, name in seen if name != threading.current_thread().name}
    assert all(name.startswith("nnkernels-part") for name in names)
    assert len(names) <= STATE.helpers.size
    assert sorted((i, lo, hi) for i, lo, hi, _ in seen) == sorted([(0, 0, 2), (1, 2, 4)] * 21)


@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
def test_nested_and_concurrent_calls_do_not_wait_on_each_others_helpers():
    """A part that shares its own work again finds the helper busy (with itself): the calling
    thread then runs the queued part. Bounded by a timeout instead of hanging."""
    done = []

    def inner(index, lo, hi, stop):
        done.append(("inner", lo, hi))

    def outer(index, lo, hi, stop):
        helpers.run_parts([(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)], inner)
        done.append(("outer", lo, hi))

    def both():
        helpers.run_parts([(0, 4), (4, 8)], outer)

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
    from nnkernels.runtime.helpers import run_parts
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
    not (TWO_THREADS and hasattr(os, "fork")),
    reason="needs 2 threads and fork",
)
def test_a_forked_child_shares_work_over_helpers_of_its_own():
    result = run_python(FORK_AFTER_HELPERS, timeout=120)
    assert_ok(result)
    assert output_line(result, "child") == "0"


@pytest.mark.parametrize(
    "n_samples, channels", [(1, 1), (1, 64), (7, 23), (64, 64), (100, 30), (1000, 3)]
)
def test_channel_blocks_are_whole_samples_when_the_batch_is_large_enough(n_samples, channels):
    block, items = partition.channel_blocks(n_samples, channels)
    assert 1 <= block <= channels
    assert items == n_samples * len(range(0, channels, block))
    assert items >= min(n_samples * channels, partition.CHANNEL_BLOCK_ITEMS) // 2
    if n_samples >= partition.CHANNEL_BLOCK_ITEMS:
        assert block == channels


# ------------------------------------------------------------------ Convolution
def test_automatic_chunk_size_keeps_small_column_matrices_whole(workspace_limit):
    from nnkernels.config import AUTO_CHUNK_ABOVE, AUTO_WORKSPACE

    workspace_limit(None)
    per_sample = 1 << 20
    whole = AUTO_CHUNK_ABOVE // per_sample
    assert partition.conv_chunk_size(whole, per_sample) == whole
    assert partition.conv_chunk_size(whole + 1, per_sample) == AUTO_WORKSPACE // per_sample
    assert partition.conv_chunk_size(3, AUTO_CHUNK_ABOVE) == 1  # one sample above the threshold
    workspace_limit(1 << 62)  # a bound of the user's replaces the automatic one
    assert partition.conv_chunk_size(whole + 1, per_sample) == whole + 1
    workspace_limit(2 * per_sample)
    assert partition.conv_chunk_size(whole, per_sample) == 2


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
