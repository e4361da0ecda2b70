"""Peak array memory of conv C forward+backward (tracemalloc), nnlayers vs the reference.

``python tools/conv_memory.py``: MiB for float32 and float64: the layer through the fused
kernels (``nnkernels.conv_forward``/``conv_backward``, where available), then through
columns and ``numpy.matmul`` (its fallback route) with the default (automatic) workspace
setting, with the whole column matrix kept (``set_workspace_limit(1 << 62)``) and with
``nnlayers.set_workspace_limit(16 << 20)``. A fresh layer is built inside each measured
call, so the buffers a layer keeps are counted.
"""

import tracemalloc

import numpy as np

import nnkernels._blas
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
        ref = peak_mib(reference, x, W, b, dout)
        ours = {}
        if nnkernels._blas.AVAILABLE:
            ours["fused kernels"] = peak_mib(nnlayers, x, W, b, dout)
        available, nnkernels._blas.AVAILABLE = nnkernels._blas.AVAILABLE, False
        for label, bound in (("default", None), ("whole", 1 << 62), ("16 MiB bound", 16 << 20)):
            previous = nnlayers.set_workspace_limit(bound)
            try:
                ours[f"matmul route {label}"] = peak_mib(nnlayers, x, W, b, dout)
            finally:
                nnlayers.set_workspace_limit(previous)
        nnkernels._blas.AVAILABLE = available
        print(f"{np.dtype(dtype).name}: reference {ref:.0f} MiB, nnlayers "
              + ", ".join(f"{label} {mib:.0f} MiB" for label, mib in ours.items()))


if __name__ == "__main__":
    main()
