"""Could the single-threaded twins go? What a small call costs each way, and what the twins
cost to compile.

``python tools/one_thread_runs.py``: microseconds per call (best of 5 loops), float32, for
ReLU forward+backward on 4,608 elements and batch norm B (N=100, D=100) forward+backward
through the layers, with small inputs run (a) by the twins compiled without threads (what
the library does) and (b) by the parallel kernels with Numba's thread count set to 1 for
the call (what dropping the twins would mean; the thread count is set through Numba's
private per-thread setter, the cheapest way). Then, in a fresh process with an empty cache,
the compile seconds of every twin and every parallel kernel (Numba's ``compiler_lock``
timer) when ``nnkernels.precompile``'s groups are compiled in one process.
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

COMPILE_SCRIPT = r"""
import nnkernels
from nnkernels import _jit, _precompile, activations, batchnorm, columns, pooling

for name in _precompile._GROUPS:
    _precompile._compile_group(name, ("float32", "float64"))
kernels = [v for m in (activations, batchnorm, columns) for v in vars(m).values()
           if isinstance(v, _jit._Kernel)]
kernels += [pooling._forward_kernel(2, 2, 2), pooling._backward_kernel(2, 2)]
seconds = {"parallel": 0.0, "twin": 0.0}
for kernel in kernels:
    for kind, k in (("parallel", kernel), ("twin", kernel._serial)):
        if k is None or k is kernel and kind == "twin":
            continue
        for result in k.dispatcher.overloads.values():
            seconds[kind] += result.metadata["timers"]["compiler_lock"]
print(f"compile seconds, both dtypes: parallel kernels {seconds['parallel']:.1f} s, "
      f"twins {seconds['twin']:.1f} s")
"""


def per_call_us(fn, loops=2000):
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops * 1e6)
    return best


def main():
    import numba
    import nnkernels._jit as jit
    import nnlayers
    from numba.np.ufunc import parallel as numba_parallel

    numba.get_num_threads()  # starts the threading layer, which binds the setters used below

    rng = np.random.default_rng(0)
    x = rng.standard_normal(4608).astype(np.float32)
    relu = nnlayers.Relu()
    xb = rng.standard_normal((100, 100)).astype(np.float32)
    bn = nnlayers.BatchNormalization(np.ones(100, np.float32), np.zeros(100, np.float32))

    def relu_step():
        relu.backward(relu.forward(x))

    def bn_step():
        bn.backward(bn.forward(xb))

    def on_one_thread(kernel):
        def run(*args):
            previous = numba_parallel._get_num_threads()
            numba_parallel._set_num_threads(1)
            try:
                return kernel(*args)
            finally:
                numba_parallel._set_num_threads(previous)
        return run

    twin_sized = jit._Kernel.sized

    def one_thread_sized(self, work):
        chosen = twin_sized(self, work)
        return self if chosen is self else on_one_thread(self)

    relu_step()
    bn_step()
    for label in ("twins", "parallel kernels on one thread"):
        jit._Kernel.sized = twin_sized if label == "twins" else one_thread_sized
        try:
            print(f"{label:32s} ReLU fwd+bwd {per_call_us(relu_step):6.1f} us   "
                  f"batch norm B fwd+bwd {per_call_us(bn_step):6.1f} us")
        finally:
            jit._Kernel.sized = twin_sized

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env,
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
