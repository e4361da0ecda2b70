"""Layers shared by threads, and layers interrupted mid-call.

One layer's ``forward`` called from several threads at once returns what each call would
return alone (scratch is taken per call). A ``KeyboardInterrupt`` in the middle of a call
leaves no helper thread running and the next call correct.
"""

import threading

import numba
import numpy as np
import pytest

import nnkernels
import nnlayers
from _subprocess_helpers import assert_ok, output_line, run_python
from conv_routes import ROUTES

TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2


def _shared_forward_mismatches(layer, inputs, expected, rounds):
    """Run ``layer.forward`` on ``inputs`` from one thread per input, ``rounds`` times."""
    mismatches = []
    barrier = threading.Barrier(len(inputs))

    def call(index):
        for _ in range(rounds):
            barrier.wait()
            out = layer.forward(inputs[index])
            if not np.array_equal(out, expected[index]):
                mismatches.append(index)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return mismatches


@pytest.mark.parametrize("route", ROUTES)
def test_one_convolution_shared_by_threads_gives_each_call_its_own_output(route):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    layer = nnlayers.Convolution(W, np.zeros(16, np.float32), 1, 1, route=route)
    # outputs of 2 MiB: large enough that a layer would be tempted to reuse them
    inputs = [rng.standard_normal((32, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    with nnkernels.config_context(split_min_macs=0):  # share the samples over threads too
        expected = [layer.forward(x).copy() for x in inputs]
        assert _shared_forward_mismatches(layer, inputs, expected, rounds=15) == []


def test_pooling_and_batchnorm_inference_shared_by_threads():
    rng = np.random.default_rng(1)
    pool = nnlayers.Pooling(2, 2, stride=2)
    bn = nnlayers.BatchNormalization(
        np.ones(8), np.zeros(8), per_channel=True, running_mean=np.zeros(8), running_var=np.ones(8)
    )
    inputs = [rng.standard_normal((8, 8, 12, 12)) for _ in range(3)]
    for forward in (pool.forward, lambda x: bn.forward(x, train_flg=False)):
        layer = type("Layer", (), {"forward": staticmethod(forward)})
        expected = [forward(x).copy() for x in inputs]
        assert _shared_forward_mismatches(layer, inputs, expected, rounds=10) == []


INTERRUPT_CHILD = r"""
import _thread, random, threading, time
import numpy as np
import nnkernels, nnlayers

route = "{route}"
rng = np.random.default_rng(0)
W = rng.standard_normal((16, 8, 3, 3))
x = rng.standard_normal((24, 8, 24, 24))
dout = rng.standard_normal((24, 16, 24, 24))
layer = nnlayers.Convolution(W, np.zeros(16), 1, 1, route=route)
with nnkernels.config_context(split_min_macs=0, workspace_limit=1 << 20):
    want = [layer.forward(x).copy(), layer.backward(dout).copy(), layer.dW.copy()]
    start = time.perf_counter()
    layer.forward(x); layer.backward(dout)
    step = time.perf_counter() - start
    baseline = threading.active_count()
    interrupts = wrong = leftover = 0
    random.seed(1)
    for attempt in range({attempts}):
        timer = threading.Timer(random.uniform(0, step), _thread.interrupt_main)
        try:
            timer.start()
            layer.forward(x); layer.backward(dout)
            timer.join()
            time.sleep(0.01)  # an interrupt that fired after the call lands here
        except KeyboardInterrupt:
            interrupts += 1
        timer.join()
        if threading.active_count() > baseline:
            leftover += 1
        got = [layer.forward(x), layer.backward(dout), layer.dW]
        wrong += not all(np.array_equal(g, w) for g, w in zip(got, want))
print("INTERRUPTS", interrupts)
print("LEFTOVER", leftover)
print("WRONG", wrong)
"""


@pytest.mark.slow
@pytest.mark.skipif(not TWO_THREADS, reason="needs 2 threads")
@pytest.mark.parametrize("route", ROUTES)
def test_an_interrupted_call_leaves_no_helper_running_and_the_next_call_right(route):
    result = run_python(INTERRUPT_CHILD.format(route=route, attempts=60), timeout=600)
    assert_ok(result)
    assert int(output_line(result, "INTERRUPTS")) >= 10
    assert int(output_line(result, "LEFTOVER")) == 0
    assert int(output_line(result, "WRONG")) == 0
