"""Forward+backward time of every layer, nnlayers vs the reference, batch 100 at 28x28 scale.

``python tools/layer_speeds.py [float32|float64]``: contenders interleaved, median of 15
rounds after a warm-up, in ms. Shapes: the book's SimpleConvNet activations (conv 1->30
5x5 on 28x28, 30x24x24 activations, affine 4320->100, 10 classes).
"""

import statistics
import sys
import time

import numpy as np

import nnlayers
from nnlayers import reference


def cases(dtype):
    rng = np.random.default_rng(0)
    act = rng.standard_normal((100, 30, 24, 24)).astype(dtype)
    yield "Convolution 1->30 5x5, 1x28x28", lambda m: m.Convolution(
        (0.1 * rng.standard_normal((30, 1, 5, 5))).astype(dtype), np.zeros(30, dtype)), \
        (rng.random((100, 1, 28, 28)).astype(dtype),), act
    yield "Pooling 2x2 s2, 30x24x24", lambda m: m.Pooling(2, 2, stride=2), (act,), \
        rng.standard_normal((100, 30, 12, 12)).astype(dtype)
    yield "Relu, 30x24x24", lambda m: m.Relu(), (act,), act
    yield "Sigmoid, 30x24x24", lambda m: m.Sigmoid(), (act,), act
    yield "Dropout 0.5, 30x24x24", lambda m: m.Dropout(0.5), (act,), act
    yield "BatchNormalization, 30x24x24 per activation", lambda m: m.BatchNormalization(
        np.ones(17280, dtype), np.zeros(17280, dtype)), (act,), act
    yield "Affine 4320->100", lambda m: m.Affine(
        (0.01 * rng.standard_normal((4320, 100))).astype(dtype), np.zeros(100, dtype)), \
        (rng.standard_normal((100, 30, 12, 12)).astype(dtype),), \
        rng.standard_normal((100, 100)).astype(dtype)
    yield "SoftmaxWithLoss, 10 classes", lambda m: m.SoftmaxWithLoss(), \
        (rng.standard_normal((100, 10)).astype(dtype), rng.integers(0, 10, 100)), 1


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    print(f"layer forward+backward, batch 100, {dtype.name}; median of 15 interleaved rounds")
    print(f"{'layer':<46} {'reference ms':>12} {'nnlayers ms':>12} {'speedup':>8}")
    for name, make, inputs, dout in cases(dtype):
        layers = {"reference": make(reference), "nnlayers": make(nnlayers)}
        times = {k: [] for k in layers}
        for round_ in range(16):
            for key, layer in layers.items():
                d = dout.copy() if isinstance(dout, np.ndarray) else dout  # the reference's Relu writes into dout
                start = time.perf_counter()
                layer.forward(*inputs)
                layer.backward(d)
                if round_:
                    times[key].append(time.perf_counter() - start)
        ref, fast = (statistics.median(times[k]) for k in ("reference", "nnlayers"))
        print(f"{name:<46} {ref * 1e3:12.2f} {fast * 1e3:12.2f} {ref / fast:7.2f}x")


if __name__ == "__main__":
    main()
