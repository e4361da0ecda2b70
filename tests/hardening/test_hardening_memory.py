"""Long runs leave memory flat: no growth from a thousand training steps of a small convnet.

NumPy reports its buffers to ``tracemalloc``, so the traced total measures leaked arrays;
the resident set size (``/proc/self/statm``) also catches native leaks (Numba's runtime,
kernel launches, BLAS workspaces). Both are sampled after a warm-up (JIT compiled,
allocator pools filled) and again after the long run.
"""

import gc
import os
import tracemalloc

import numpy as np
import pytest

import nnkernels
import nnlayers

pytestmark = pytest.mark.slow

WARMUP_STEPS = 100
STEPS = 1000


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class SmallConvNet:
    """Conv(4 3x3, pad 1) -> Relu -> Pool 2x2/2 -> Affine -> SoftmaxWithLoss, trained by SGD."""

    def __init__(self, dtype, rng):
        self.params = {
            "W1": (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(dtype),
            "b1": np.zeros(4, dtype=dtype),
            "W2": (rng.standard_normal((4 * 5 * 5, 5)) * 0.1).astype(dtype),
            "b2": np.zeros(5, dtype=dtype),
        }
        p = self.params
        self.layers = [
            nnlayers.Convolution(p["W1"], p["b1"], 1, 1),
            nnlayers.Relu(),
            nnlayers.Pooling(2, 2, stride=2),
            nnlayers.Affine(p["W2"], p["b2"]),
        ]
        self.loss_layer = nnlayers.SoftmaxWithLoss()

    def step(self, x, t, lr=0.01):
        h = x
        for layer in self.layers:
            h = layer.forward(h)
        loss = self.loss_layer.forward(h, t)
        d = self.loss_layer.backward()
        for layer in reversed(self.layers):
            d = layer.backward(d)
        conv, affine = self.layers[0], self.layers[3]
        for key, grad in (("W1", conv.dW), ("b1", conv.db), ("W2", affine.dW), ("b2", affine.db)):
            self.params[key] -= lr * grad  # in place, as the book's optimizers do
        return float(loss)


@pytest.fixture
def default_threshold():
    """The default parallel_threshold (the suite lowers it to 0): this small network's
    kernels then run in the calling thread, and what the helper threads hold for a moment
    after each shared call does not blur the count."""
    from nnkernels.config import _DEFAULTS

    with nnkernels.config_context(parallel_threshold=_DEFAULTS["parallel_threshold"]):
        yield


@pytest.mark.parametrize("dtype", [np.float32])
def test_thousand_training_steps_leave_memory_flat(dtype, default_threshold):
    rng = np.random.default_rng(7)
    net = SmallConvNet(dtype, rng)
    batches = [
        (rng.standard_normal((8, 1, 10, 10)).astype(dtype), rng.integers(0, 5, 8))
        for _ in range(16)
    ]
    for i in range(WARMUP_STEPS):
        net.step(*batches[i % len(batches)])
    gc.collect()
    tracemalloc.start()
    try:
        traced_before, _ = tracemalloc.get_traced_memory()
        rss_before = _rss_bytes()
        losses = [net.step(*batches[i % len(batches)]) for i in range(STEPS // 2)]
        gc.collect()
        traced_half, _ = tracemalloc.get_traced_memory()
        rss_half = _rss_bytes()
        losses += [net.step(*batches[i % len(batches)]) for i in range(STEPS // 2, STEPS)]
        gc.collect()
        traced_after, traced_peak = tracemalloc.get_traced_memory()
        rss_after = _rss_bytes()
    finally:
        tracemalloc.stop()
    assert all(np.isfinite(losses))
    assert np.mean(losses[-100:]) < np.mean(losses[:100])  # it trains, so it really ran
    traced_growth = traced_after - traced_before
    rss_growth = rss_after - rss_before
    print(
        f"\n[memory] {STEPS} steps: traced growth {traced_growth} B (peak {traced_peak} B), "
        f"RSS growth {rss_growth / 2**20:.2f} MiB"
    )
    # a leak of one small array per step would be >= 1000 * 8*4*10*10*4 B ~ 12 MiB; the
    # first half may still fill the layers' state (their last activations), the second not
    assert traced_growth < 256 * 1024
    assert traced_after - traced_half < 16 * 1024
    assert rss_growth < 8 * 2**20
    assert rss_after - rss_half < 2 * 2**20
