"""Convolution forward+backward through the fused kernels vs through columns and matmul.

``python tools/conv_routes.py float32 [A,B,C,L2,L7,L12,predict] [after-reference]``: for each shape
(conv A/B/C of the benchmark and DeepConvNet's layers 2, 7 and 12, as in
``tools/conv_parts.py``), one layer per route: "matmul" (per-sample columns, ``numpy.matmul``
and col2im, the samples shared over Python threads: what the layer does where the fused
kernels are unavailable) and "kernels" (``nnkernels.conv_forward`` / ``conv_backward``: one
kernel each way, calling NumPy's OpenBLAS per sample). With ``after-reference``, the
reference layer's forward+backward on the same shape runs before every timed call, as in
``python -m nnlayers.bench``. The routes alternate call by call, 11 rounds; printed: the
median ms of each and the median over rounds of kernels/matmul in the same round.
``predict`` (in the default list): ``SimpleConvNet.predict`` on one image (float32, 200 calls per route, two alternations,
median us): a convolution too small to share, where the layer's default is the matmul
route.
"""

import statistics
import sys
import time

import numpy as np

import nnkernels._blas
import nnlayers
import nnlayers.layers
from nnlayers import reference
from conv_parts import SHAPES


def main():
    if not nnkernels._blas.AVAILABLE:
        sys.exit("the fused kernels are unavailable here (NumPy's BLAS is not its OpenBLAS)")
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else [*SHAPES, "predict"]
    after_reference = len(sys.argv) > 3 and sys.argv[3] == "after-reference"
    rng = np.random.default_rng(0)
    for name in names:
        if name == "predict":
            predict_one_image()
            continue
        N, C, H, W, FN, FH, FW, stride, pad = SHAPES[name]
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        weights = (0.1 * rng.standard_normal((FN, C, FH, FW))).astype(dtype)

        def route(kernels):
            layer = nnlayers.Convolution(weights, np.zeros(FN, dtype), stride, pad)
            dout = np.ones_like(layer.forward(x))

            def run():
                nnlayers.layers._CONV_ROUTE = "kernels" if kernels else "matmul"
                try:
                    layer.forward(x)
                    layer.backward(dout)
                finally:
                    nnlayers.layers._CONV_ROUTE = None
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


def predict_one_image():
    from nntrain.networks import SimpleConvNet

    net = SimpleConvNet(layers=nnlayers, dtype=np.float32, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((1, 1, 28, 28)).astype(np.float32)
    times = {"matmul": [], "kernels": []}
    try:
        for _ in range(2):
            for route, runs in times.items():
                nnlayers.layers._CONV_ROUTE = route
                net.predict(x)
                for _ in range(200):
                    start = time.perf_counter()
                    net.predict(x)
                    runs.append(time.perf_counter() - start)
    finally:
        nnlayers.layers._CONV_ROUTE = None
    print(f"SimpleConvNet.predict, one image, float32, threading layer "
          f"{nnkernels.threading_layer()}: "
          + ", ".join(f"{route} {statistics.median(runs) * 1e6:.0f} us"
                      for route, runs in times.items()), flush=True)


if __name__ == "__main__":
    main()
