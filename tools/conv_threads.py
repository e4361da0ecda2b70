"""Convolution forward+backward, nnlayers vs the reference, conv A/B/C, in ms.

``python tools/conv_threads.py float32``; run it under different thread settings to see
how Numba's and OpenBLAS's pools interact, e.g. ``OPENBLAS_NUM_THREADS=1 python
tools/conv_threads.py`` or ``NUMBA_NUM_THREADS=1 ...``. Median of 7 interleaved rounds;
each round also allocates the output gradient, as a training step does.
"""

import sys
import time

import numpy as np

import nnkernels
import nnlayers as fast
from nnlayers import reference

SHAPES = {"A": (100, 1, 28, 28, 30, 5, 5, 1, 0), "B": (100, 16, 14, 14, 32, 3, 3, 1, 1),
          "C": (64, 64, 32, 32, 64, 3, 3, 1, 1)}


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    rng = np.random.default_rng(0)
    for name, (N, C, H, W, FN, FH, FW, stride, pad) in SHAPES.items():
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        weights = (0.1 * rng.standard_normal((FN, C, FH, FW))).astype(dtype)
        bias = np.zeros(FN, dtype)
        layers = {"fast": fast.Convolution(weights, bias, stride, pad),
                  "ref": reference.Convolution(weights, bias, stride, pad)}

        def run(layer):
            out = layer.forward(x)
            layer.backward(np.ones_like(out))

        times = {key: [] for key in layers}
        for key, layer in layers.items():
            run(layer)
        for _ in range(7):
            for key, layer in layers.items():
                start = time.perf_counter()
                run(layer)
                times[key].append(time.perf_counter() - start)
        f, r = (float(np.median(times[k])) for k in ("fast", "ref"))
        print(f"{name} {dtype} fast {f * 1e3:7.1f} ms  ref {r * 1e3:7.1f} ms  speedup {r / f:5.2f}"
              f"  layer={nnkernels.threading_layer()}")


if __name__ == "__main__":
    main()
