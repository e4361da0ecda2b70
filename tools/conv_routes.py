"""Convolution forward+backward through the fused kernels vs through columns and matmul.

``python tools/conv_routes.py float32 [A,B,C,L2,L7,L12] [after-reference]``: for each shape
(conv A/B/C of the benchmark and DeepConvNet's layers 2, 7 and 12, as in
``tools/conv_parts.py``), one layer per route: "matmul" (per-sample columns, ``numpy.matmul``
and col2im, the samples shared over Python threads: what the layer does where the fused
kernels are unavailable) and "kernels" (``nnkernels.conv_forward`` / ``conv_backward``: one
kernel each way, calling NumPy's OpenBLAS per sample). With ``after-reference``, the
reference layer's forward+backward on the same shape runs before every timed call, as in
``python -m nnlayers.bench``. The routes alternate call by call, 11 rounds; printed: the
median ms of each and the median over rounds of kernels/matmul in the same round.
"""

import statistics
import sys
import time

import numpy as np

import nnkernels._blas
import nnlayers
from nnlayers import reference
from conv_parts import SHAPES


def main():
    if not nnkernels._blas.AVAILABLE:
        sys.exit("the fused kernels are unavailable here (NumPy's BLAS is not its OpenBLAS)")
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(SHAPES)
    after_reference = len(sys.argv) > 3 and sys.argv[3] == "after-reference"
    rng = np.random.default_rng(0)
    for name in names:
        N, C, H, W, FN, FH, FW, stride, pad = SHAPES[name]
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        weights = (0.1 * rng.standard_normal((FN, C, FH, FW))).astype(dtype)

        def route(kernels):
            layer = nnlayers.Convolution(weights, np.zeros(FN, dtype), stride, pad)
            dout = np.ones_like(layer.forward(x))

            def run():
                nnkernels._blas.AVAILABLE = kernels
                try:
                    layer.forward(x)
                    layer.backward(dout)
                finally:
                    nnkernels._blas.AVAILABLE = True
            return run

        runs = {"matmul": route(False), "kernels": route(True)}
        slow = reference.Convolution(weights, np.zeros(FN, dtype), stride, pad)
        slow_dout = np.ones_like(slow.forward(x))
        times = {label: [] for label in runs}
        for run in runs.values():
            run()
        for _ in range(11):
            for label, run in runs.items():
                if after_reference:
                    slow.forward(x)
                    slow.backward(slow_dout)
                start = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - start)
        ratio = statistics.median(k / m for k, m in zip(times["kernels"], times["matmul"]))
        note = " after the reference" if after_reference else ""
        print(f"{name:4s} {dtype.name}{note}: matmul {statistics.median(times['matmul']) * 1e3:.2f} ms, "
              f"kernels {statistics.median(times['kernels']) * 1e3:.2f} ms, kernels/matmul {ratio:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
