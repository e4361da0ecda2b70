"""Prototype for the next step: the whole per-sample forward inside one Numba kernel.

``python tools/fused_conv_probe.py``: float32 convolution forward (stride 1, same padding)
of the layer (``nnlayers.Convolution.forward``: Python threads each run, for their share of
the samples, the column kernel, one ``np.matmul`` over the share and the bias) against a
prototype where a ``prange`` over samples does, per sample, the columns into a scratch array
that stays in cache, NumPy's own OpenBLAS ``cblas_sgemm`` called from Numba by its exported
symbol (OpenBLAS held at one thread), and the bias. Same products, so the same bits (the
largest difference is printed). Alternating call by call, 15 rounds: median ms of each
and the median ratio prototype/layer. Needs NumPy on OpenBLAS (threadpoolctl finds it).
"""

import statistics
import time

import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange, types
from numba.core.extending import intrinsic
from threadpoolctl import threadpool_info

import nnlayers
from nnkernels.threads import single_threaded_blas

_OPENBLAS = [i["filepath"] for i in threadpool_info() if i["internal_api"] == "openblas"][0]
llvm.load_library_permanently(_OPENBLAS)
_F32P = types.CPointer(types.float32)
# NumPy's OpenBLAS exports the CBLAS interface with 64-bit integers under a "scipy_" prefix
_sgemm = types.ExternalFunction("scipy_cblas_sgemm64_", types.void(
    types.int32, types.int32, types.int32, types.int64, types.int64, types.int64,
    types.float32, _F32P, types.int64, _F32P, types.int64, types.float32, _F32P, types.int64))
_ROW_MAJOR, _NO_TRANS = 101, 111


@intrinsic
def _data(typingctx, array):
    """Pointer to a C-contiguous array's first element."""
    def codegen(context, builder, signature, args):
        return context.make_array(array)(context, builder, args[0]).data
    return types.CPointer(array.dtype)(array), codegen


@njit(nogil=True)
def _columns_of_one(x, fh, fw, pad, oh, ow, cols):
    C, H, W = x.shape
    for c in range(C):
        for ky in range(fh):
            for kx in range(fw):
                row = (c * fh + ky) * fw + kx
                for oy in range(oh):
                    iy = oy + ky - pad
                    for ox in range(ow):
                        ix = ox + kx - pad
                        inside = 0 <= iy < H and 0 <= ix < W
                        cols[row, oy * ow + ox] = x[c, iy, ix] if inside else np.float32(0.0)


@njit(nogil=True, parallel=True)
def fused_forward(x, W, b, pad, out):
    N, C, H, Wd = x.shape
    FN, _, fh, fw = W.shape
    oh, ow = out.shape[2], out.shape[3]
    K, P = C * fh * fw, oh * ow
    weights = W.reshape(FN, K)
    flat = out.reshape(N, FN, P)
    for n in prange(N):
        cols = np.empty((K, P), np.float32)
        _columns_of_one(x[n], fh, fw, pad, oh, ow, cols)
        result = flat[n]
        _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, FN, P, K, np.float32(1.0), _data(weights), K,
               _data(cols), P, np.float32(0.0), _data(result), P)
        for f in range(FN):
            for p in range(P):
                result[f, p] += b[f]


def main():
    rng = np.random.default_rng(0)
    shapes = {"B": (100, 16, 14, 14, 32), "C": (64, 64, 32, 32, 64),
              "L2": (100, 16, 28, 28, 16), "L12": (100, 64, 8, 8, 64)}
    for name, (N, C, H, Wd, FN) in shapes.items():
        x = rng.standard_normal((N, C, H, Wd)).astype(np.float32)
        W = (0.1 * rng.standard_normal((FN, C, 3, 3))).astype(np.float32)
        b = rng.standard_normal(FN).astype(np.float32)
        out = np.empty((N, FN, H, Wd), np.float32)
        layer = nnlayers.Convolution(W, b, 1, 1)

        def prototype():
            with single_threaded_blas():
                fused_forward(x, W, b, 1, out)

        prototype()
        difference = np.abs(out - layer.forward(x)).max()
        times = {"layer": [], "prototype": []}
        for _ in range(15):
            for label, call in (("layer", lambda: layer.forward(x)), ("prototype", prototype)):
                start = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - start)
        ratio = statistics.median(p / q for p, q in zip(times["prototype"], times["layer"]))
        print(f"{name:4s} float32 forward: layer {statistics.median(times['layer']) * 1e3:.2f} ms, "
              f"prototype {statistics.median(times['prototype']) * 1e3:.2f} ms, ratio {ratio:.2f}, "
              f"max |difference| {difference:.1e}", flush=True)


if __name__ == "__main__":
    main()
