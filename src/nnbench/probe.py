"""Start-up probe the comparison command runs in a fresh interpreter.

Usage: ``python -m nnbench.probe cold|warm|precompile DTYPES OUT.json`` with
``NUMBA_CACHE_DIR`` set by the caller. It times ``import nnlayers`` from the very start
of the process, then:

* ``cold``: the first and second call of every public kernel and every layer, for each
  dtype (with an empty cache the first call is compile + run); for kernels, also the
  first call shared over threads (small inputs run in one share in the calling thread);
* ``warm``: the first and second Convolution forward+backward on conv A (float32), to
  show what loading the kernels from a warm cache costs;
* ``precompile``: ``nnkernels.precompile(dtypes)`` when it exists.

Results go to OUT.json. ``nnbench/__init__.py`` imports nothing, so the clock starts
before ``numpy`` and ``nnlayers`` load.
"""

import json
import sys
import time

_T0 = time.perf_counter()
import numpy as np  # noqa: E402 - after the clock starts

import nnkernels  # noqa: E402
import nnlayers  # noqa: E402

_IMPORT_S = time.perf_counter() - _T0


def _kernel_calls(dtype):
    """``(name, call)`` for every example call of the kernel table, on ``dtype``."""
    from nnkernels import registry as _registry

    return _registry.example_calls(dtype)


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
            layer = nnlayers.BatchNormalization(
                np.ones(n_stats, dtype), np.zeros(n_stats, dtype), per_channel=per_channel
            )
            layer.backward(np.ones_like(layer.forward(x)))
            layer.forward(x, train_flg=False)

        return call

    def relu():
        layer = nnlayers.Relu()
        layer.backward(np.ones_like(layer.forward(x)))

    return [
        ("Relu", relu),
        ("Convolution", conv),
        ("Pooling", pool),
        ("BatchNormalization", bn(False)),
        ("BatchNormalization per_channel", bn(True)),
    ]


def _timed(call):
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def _forced_parallel():
    """Kernels share their work over threads whatever the input's size."""
    return nnkernels.config_context(parallel_threshold=0)


def _first_two(call, parallel_too=False):
    """Times of the first and second call, or the error the first one raised.

    With ``parallel_too``, also the first call shared over threads: below a size threshold
    kernels run in one share in the calling thread, and the probe's inputs are tiny.
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
                rows.append(
                    dict(
                        group=group,
                        name=name,
                        dtype=dtype,
                        **_first_two(call, parallel_too=group == "kernel"),
                    )
                )
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
    return {
        "import_s": _IMPORT_S,
        "precompile_s": time.perf_counter() - t,
        "per_dtype_s": per_dtype if isinstance(per_dtype, dict) else None,
    }


def main(argv):
    mode, dtypes, out = argv[1], argv[2].split(","), argv[3]
    result = {"cold": cold, "warm": warm, "precompile": precompile}[mode](dtypes)
    result["threading_layer"] = nnkernels.threading_layer()
    with open(out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv)
