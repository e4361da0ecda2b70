"""Peak array memory of conv C forward+backward (tracemalloc), nnlayers vs the reference.

``python tools/conv_memory.py``: MiB for float32 and float64, unbounded and with
``nnlayers.set_workspace_limit(16 << 20)``. A fresh layer is built inside each measured
call, so the buffers a layer keeps are counted.
"""

import tracemalloc

import numpy as np

import nnlayers
from nnlayers import reference


def peak_mib(module, x, W, b, dout):
    def step():
        layer = module.Convolution(W, b, stride=1, pad=1)
        layer.forward(x)
        layer.backward(dout)

    step()  # compile first
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        step()
        return (tracemalloc.get_traced_memory()[1] - before) / 2**20
    finally:
        tracemalloc.stop()


def main():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((64, 64, 32, 32)).astype(dtype)
        W = (0.1 * rng.standard_normal((64, 64, 3, 3))).astype(dtype)
        b = np.zeros(64, dtype)
        dout = rng.standard_normal((64, 64, 32, 32)).astype(dtype)
        ours = peak_mib(nnlayers, x, W, b, dout)
        ref = peak_mib(reference, x, W, b, dout)
        previous = nnlayers.set_workspace_limit(16 << 20)
        try:
            bounded = peak_mib(nnlayers, x, W, b, dout)
        finally:
            nnlayers.set_workspace_limit(previous)
        print(f"{np.dtype(dtype).name}: nnlayers {ours:.0f} MiB, reference {ref:.0f} MiB, "
              f"nnlayers with a 16 MiB workspace bound {bounded:.0f} MiB")


if __name__ == "__main__":
    main()
