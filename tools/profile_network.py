"""Per-layer forward/backward times of one training step: where a network's time goes.

``python tools/profile_network.py deep float32``: ``nntrain``'s DeepConvNet (``deep``) or
SimpleConvNet (``simple``) on nnlayers (``nnbench.cases.build_network``), batch 100 of
1x28x28, and prints the mean time of every layer's forward and backward over 10 steps
(after 3 warm-up steps), largest first, and the total. ``--quick``: batch of 4, 1 step.
"""

import argparse
import time

import numpy as np

import nnlayers
from nnbench.cases import BATCH, NETWORKS, build_network, network_batch


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/profile_network.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("model", nargs="?", default="deep", choices=list(NETWORKS))
    ap.add_argument("dtype", nargs="?", default="float32")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    net = build_network(args.model, "nnlayers", dtype)
    layers = list(net.layers.values()) if isinstance(net.layers, dict) else list(net.layers)
    x, t = network_batch(np.random.default_rng(0), dtype, 4 if args.quick else BATCH)
    warmup, steps = (1, 1) if args.quick else (3, 10)
    for _ in range(warmup):
        net.gradient(x, t)
    totals = {}
    for _ in range(steps):
        out = x
        for i, layer in enumerate(layers):
            start = time.perf_counter()
            out = (
                layer.forward(out, True)
                if isinstance(layer, nnlayers.Dropout)
                else layer.forward(out)
            )
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
        print(
            f"layer {i:2d} {name:<20} {direction:<8} {shape!s:<20} {seconds / steps * 1e3:7.2f} ms"
        )
    print(f"total {sum(totals.values()) / steps * 1e3:.1f} ms per step (layers only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
