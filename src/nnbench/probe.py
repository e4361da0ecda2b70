"""Start-up probe the comparison command runs in a fresh interpreter.

Usage: ``python -m nnbench.probe cold|warm|precompile DTYPES OUT.json`` with
``NUMBA_CACHE_DIR`` set by the caller. It times ``import nnlayers`` from the very start
of the process, then:

* ``cold``: the first and second call of every public kernel and every layer, for each
  dtype (with an empty cache the first call is compile + run); for kernels with a
  single-threaded twin for small inputs, also the first call of the parallel kernel;
* ``warm``: the first and second Convolution forward+backward on conv A (float32), to
  show what loading the kernels from a warm cache costs;
* ``precompile``: ``nnkernels.precompile(dtypes)`` when it exists.

Results go to OUT.json. ``nnbench/__init__.py`` imports nothing, so the clock starts
before ``numpy`` and ``nnlayers`` load.
"""

import contextlib
import json
import sys
import time

_T0 = time.perf_counter()
import numpy as np

import nnkernels
import nnlayers

_IMPORT_S = time.perf_counter() - _T0


# replaced by the kernel table
def _kernel_calls(dtype):
    """``(name, call)`` for each public kernel on a tiny input of ``dtype``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    cols = {}

    def im2col():
        cols["book"] = nnkernels.im2col(x, 3, 3, 1, 1)

    def col2im():
        c = cols.get("book")
        c = c if c is not None else np.zeros((2 * 36, 27), dtype)
        nnkernels.col2im(c, x.shape, 3, 3, 1, 1)

    def im2col_per_sample():
        cols["ps"] = nnkernels.im2col_per_sample(x, 3, 3, 1, 1)

    def col2im_per_sample():
        c = cols.get("ps")
        c = c if c is not None else np.zeros((2, 27, 36), dtype)
        nnkernels.col2im_per_sample(c, x.shape, 3, 3, 1, 1)

    pooled = {}

    def maxpool_forward():
        pooled["r"] = nnkernels.maxpool_forward(x, 2, 2, 2, 0)

    def maxpool_backward():
        out, arg = pooled.get("r") or (np.zeros((2, 3, 3, 3), dtype),
                                       np.zeros((2, 3, 3, 3), np.int64))
        nnkernels.maxpool_backward(np.ones_like(out), arg, x.shape, 2, 2, 2, 0)

    def maxpool_forward_3x3():
        pooled["r3"] = nnkernels.maxpool_forward(x, 3, 3, 2, 0)

    def maxpool_backward_3x3():
        out, arg = pooled.get("r3") or (np.zeros((2, 3, 2, 2), dtype),
                                        np.zeros((2, 3, 2, 2), np.int64))
        nnkernels.maxpool_backward(np.ones_like(out), arg, x.shape, 3, 3, 2, 0)

    x2 = x.reshape(2, -1)
    g2, b2 = np.ones(x2.shape[1], dtype), np.zeros(x2.shape[1], dtype)
    g4, b4 = np.ones(3, dtype), np.zeros(3, dtype)
    bn = {}

    def bn_forward(v, g, b, key):
        def call():
            bn[key] = nnkernels.batchnorm_forward(v, g, b, 1e-6)
        return call

    def bn_inference(v, g, b):
        def call():
            nnkernels.batchnorm_inference(v, g, b, np.zeros_like(g), np.ones_like(g), 1e-6)
        return call

    def bn_backward(v, g, key):
        def call():
            _, xn, _, _, std = bn[key]
            nnkernels.batchnorm_backward(np.ones_like(v), xn, std, g)
        return call

    relu = {}

    def relu_forward():
        relu["r"] = nnkernels.relu_forward(x)

    def relu_backward():
        out, mask = relu["r"]
        nnkernels.relu_backward(out, mask)

    W = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    conv = {}

    def conv_forward():
        conv["out"] = nnkernels.conv_forward(x, W, np.zeros(4, dtype), 1, 1)

    def conv_backward():
        out = conv.get("out")
        out = out if out is not None else np.zeros((2, 4, 6, 6), dtype)
        nnkernels.conv_backward(np.ones_like(out), x, W, 1, 1)

    # the fused convolution kernels, which Convolution takes on large enough batches
    # (the probe's tiny layer call takes the columns + matmul route)
    available = getattr(nnkernels, "conv_kernels_available", lambda: False)()
    fused = [("conv_forward", conv_forward), ("conv_backward", conv_backward)] if available else []

    return fused + [
        ("relu_forward", relu_forward), ("relu_backward", relu_backward),
        ("im2col", im2col), ("col2im", col2im),
        ("im2col_per_sample", im2col_per_sample), ("col2im_per_sample", col2im_per_sample),
        ("maxpool_forward 2x2 s2", maxpool_forward), ("maxpool_backward 2x2 s2", maxpool_backward),
        ("maxpool_forward 3x3 s2", maxpool_forward_3x3),
        ("maxpool_backward 3x3 s2", maxpool_backward_3x3),
        ("batchnorm_forward (N,D)", bn_forward(x2, g2, b2, "2d")),
        ("batchnorm_backward (N,D)", bn_backward(x2, g2, "2d")),
        ("batchnorm_inference (N,D)", bn_inference(x2, g2, b2)),
        ("batchnorm_forward (N,C,H,W)", bn_forward(x, g4, b4, "4d")),
        ("batchnorm_backward (N,C,H,W)", bn_backward(x, g4, "4d")),
        ("batchnorm_inference (N,C,H,W)", bn_inference(x, g4, b4)),
    ]


def _layer_calls(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = np.zeros(4, dtype)

    def conv():
        layer = nnlayers.Convolution(W, b, 1, 1)
        layer.backward(np.ones_like(layer.forward(x)))

    def pool():
        layer = nnlayers.Pooling(2, 2, stride=2)
        layer.backward(np.ones_like(layer.forward(x)))

    def bn(per_channel):
        def call():
            n_stats = 3 if per_channel else x[0].size
            layer = nnlayers.BatchNormalization(np.ones(n_stats, dtype), np.zeros(n_stats, dtype),
                                                per_channel=per_channel)
            layer.backward(np.ones_like(layer.forward(x)))
            layer.forward(x, train_flg=False)
        return call

    def relu():
        layer = nnlayers.Relu()
        layer.backward(np.ones_like(layer.forward(x)))

    return [("Relu", relu), ("Convolution", conv), ("Pooling", pool),
            ("BatchNormalization", bn(False)), ("BatchNormalization per_channel", bn(True))]


def _timed(call):
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


@contextlib.contextmanager
def _forced_parallel():
    """Kernels take their multi-threaded version whatever the input's size.

    ``parallel_threshold=0`` is the public way; until the kernels read that setting (the
    runtime's config wiring), nnkernels' own switch does it.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(nnkernels.config_context(parallel_threshold=0))
        legacy = getattr(getattr(nnkernels, "_jit", None), "forced_parallel", None)
        if legacy is not None:  # remove once _jit reads config's parallel_threshold
            stack.enter_context(legacy())
        yield


def _first_two(call, parallel_too=False):
    """Times of the first and second call, or the error the first one raised.

    With ``parallel_too``, also the first call of the multi-threaded kernel: below a size
    threshold kernels run a single-threaded twin, and the probe's inputs are tiny.
    """
    try:
        first = _timed(call)
    except NotImplementedError:
        return {"error": "NotImplementedError"}
    except Exception as exc:  # report, keep probing the others
        return {"error": f"{type(exc).__name__}: {exc}"}
    result = {"first_s": first, "parallel_first_s": None}
    if parallel_too:
        with _forced_parallel():
            result["parallel_first_s"] = _timed(call)
    result["second_s"] = _timed(call)
    return result


def cold(dtypes):
    rows = []
    for dtype in dtypes:
        for group, calls in (("kernel", _kernel_calls(dtype)), ("layer", _layer_calls(dtype))):
            for name, call in calls:
                rows.append(dict(group=group, name=name, dtype=dtype,
                                 **_first_two(call, parallel_too=group == "kernel")))
    return {"import_s": _IMPORT_S, "calls": rows}


def warm(dtypes):
    from nnbench.cases import build_contenders, get_cases

    case = get_cases("conv_a")[0]
    run = build_contenders(case, "float32", ("nnlayers",))["nnlayers"]
    return {"import_s": _IMPORT_S, "case": case.label, "dtype": "float32", **_first_two(run)}


def precompile(dtypes):
    fn = getattr(nnkernels, "precompile", None)
    if fn is None:
        return {"import_s": _IMPORT_S, "error": "nnkernels.precompile does not exist"}
    t = time.perf_counter()
    per_dtype = fn(dtypes)
    return {"import_s": _IMPORT_S, "precompile_s": time.perf_counter() - t,
            "per_dtype_s": per_dtype if isinstance(per_dtype, dict) else None}


def main(argv):
    mode, dtypes, out = argv[1], argv[2].split(","), argv[3]
    result = {"cold": cold, "warm": warm, "precompile": precompile}[mode](dtypes)
    result["threading_layer"] = nnkernels.threading_layer()
    with open(out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv)
