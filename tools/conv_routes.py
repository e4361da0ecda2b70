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
from nnlayers import reference
from _timing import alternating_times
from conv_parts import SHAPES, conv_inputs, forced_route, forward_backward


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
        x, weights, stride, pad = conv_inputs(name, dtype, rng)
        runs = {route: forward_backward(nnlayers, x, weights, stride, pad,
                                        lambda route=route: forced_route(route))
                for route in ("matmul", "kernels")}
        reference_call = forward_backward(reference, x, weights, stride, pad)
        times = alternating_times(runs, before=reference_call if after_reference else None)
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
    for _ in range(2):
        for route, runs in times.items():
            with forced_route(route):
                net.predict(x)
                for _ in range(200):
                    start = time.perf_counter()
                    net.predict(x)
                    runs.append(time.perf_counter() - start)
    print(f"SimpleConvNet.predict, one image, float32, threading layer "
          f"{nnkernels.threading_layer()}: "
          + ", ".join(f"{route} {statistics.median(runs) * 1e6:.0f} us"
                      for route, runs in times.items()), flush=True)


if __name__ == "__main__":
    main()
