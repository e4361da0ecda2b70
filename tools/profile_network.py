"""Per-layer forward/backward times of one training step: ``python tools/profile_network.py deep float32``.

Builds ``nntrain``'s SimpleConvNet (``simple``) or DeepConvNet (``deep``) on nnlayers,
batch 100 of 1x28x28, and prints the mean time of every layer's forward and backward over
10 steps (after 3 warm-up steps), largest first, and the total.
"""

import sys
import time

import numpy as np

import nnlayers
from nntrain.networks import DeepConvNet, SimpleConvNet


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "deep"
    dtype = np.dtype(sys.argv[2] if len(sys.argv) > 2 else "float32")
    net = {"simple": SimpleConvNet, "deep": DeepConvNet}[model](
        layers=nnlayers, dtype=dtype, rng=np.random.default_rng(0))
    layers = list(net.layers.values()) if isinstance(net.layers, dict) else list(net.layers)
    rng = np.random.default_rng(0)
    x = rng.random((100, 1, 28, 28)).astype(dtype)
    t = rng.integers(0, 10, 100)
    for _ in range(3):
        net.gradient(x, t)
    totals = {}
    steps = 10
    for _ in range(steps):
        out = x
        for i, layer in enumerate(layers):
            start = time.perf_counter()
            out = layer.forward(out, True) if isinstance(layer, nnlayers.Dropout) else layer.forward(out)
            key = (i, type(layer).__name__, "forward", out.shape)
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
        net.last_layer.forward(out, t)
        dout = net.last_layer.backward()
        for i in reversed(range(len(layers))):
            start = time.perf_counter()
            dout = layers[i].backward(dout)
            key = (i, type(layers[i]).__name__, "backward", dout.shape)
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
    for (i, name, direction, shape), seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"layer {i:2d} {name:<20} {direction:<8} {str(shape):<20} {seconds / steps * 1e3:7.2f} ms")
    print(f"total {sum(totals.values()) / steps * 1e3:.1f} ms per step (layers only)")


if __name__ == "__main__":
    main()
