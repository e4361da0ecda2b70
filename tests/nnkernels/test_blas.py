"""The library computes on a BLAS of its own and never touches NumPy's: loaded privately,
NumPy's thread count and threads left alone while training, a clear fallback without it."""

import sys
import warnings

import pytest

import nnkernels
from _subprocess_helpers import assert_ok, output_line, run_python

LINUX = sys.platform.startswith("linux")
threadpoolctl = pytest.importorskip("threadpoolctl")

TRAIN = r"""
import numpy as np
from nnbench.cases import build_network, network_batch
from nntrain.optimizers import Adam

def train(model, dtype, steps):
    net, opt = build_network(model, "nnlayers", np.dtype(dtype), 0), Adam()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, t = network_batch(rng, np.dtype(dtype))
        opt.update(net.params, net.gradient(x, t))
"""


PRIVATE = r"""
import ctypes, sys
import numpy as np
import nnkernels, nnlayers
print("BEFORE", nnkernels.runtime_info()["blas"]["library"])
W = np.ones((4, 3, 3, 3), np.float32)
nnlayers.Convolution(W, 0.0, 1, 1).forward(np.ones((4, 3, 6, 6), np.float32))
info = nnkernels.runtime_info()["blas"]
print("LIBRARY", info["library"])
print("VERSION", info["version"])
print("PACKAGE_IMPORTED", "scipy_openblas32" in sys.modules)
print("GLOBAL", hasattr(ctypes.CDLL(None), "scipy_cblas_sgemm"))
"""


@pytest.mark.skipif(not nnkernels.conv_kernels_available(), reason="no library BLAS here")
@pytest.mark.skipif(not LINUX, reason="dlsym of the process namespace: Linux")
def test_the_library_blas_is_loaded_privately_and_named():
    result = run_python(PRIVATE, timeout=300)
    assert_ok(result)
    assert "not loaded yet" in output_line(result, "BEFORE")
    assert output_line(result, "LIBRARY").startswith("OpenBLAS of scipy-openblas32")
    assert output_line(result, "VERSION").startswith("0.3.")
    assert output_line(result, "PACKAGE_IMPORTED") == "False"  # its import loads it globally
    assert output_line(result, "GLOBAL") == "False"


WATCH = (
    TRAIN
    + r"""
import sys, threading
from threadpoolctl import threadpool_limits, threadpool_info

def numpy_counts():  # NumPy's own (SciPy's, which Numba imports, and the library's aside)
    return [i["num_threads"] for i in threadpool_info()
            if i["user_api"] == "blas" and "numpy" in i["filepath"]]

user_count = int(sys.argv[1])
if user_count:
    threadpool_limits(user_count, user_api="blas")  # the user's own choice, before training
expected = numpy_counts()
assert expected, "NumPy's BLAS not found"
seen, stop = [], threading.Event()

def watch():
    while not stop.is_set():
        seen.append(numpy_counts())

watcher = threading.Thread(target=watch)
watcher.start()
train("simple", sys.argv[2], 6)
stop.set()
watcher.join()
print("SAMPLES", len(seen))
print("CHANGED", sorted({tuple(s) for s in seen if s != expected}))
print("AFTER", numpy_counts() == expected)
"""
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("user_count", [0, 1, 2])
def test_numpys_blas_thread_count_never_changes_while_a_network_trains(user_count, dtype):
    """A watcher samples NumPy's BLAS thread count while another thread trains; 0: the count
    NumPy started with, 1 and 2: a count the user set before."""
    result = run_python(WATCH, args=(str(user_count), dtype), timeout=600)
    assert_ok(result)
    assert int(output_line(result, "SAMPLES")) > 20
    assert output_line(result, "CHANGED") == "[]"
    assert output_line(result, "AFTER") == "True"


QUIET = (
    TRAIN
    + r"""
import os, sys, time
main = str(os.getpid())
numpy_threads = set(os.listdir("/proc/self/task")) - {main}  # NumPy's OpenBLAS pool

def ticks():
    total = 0
    for tid in numpy_threads:
        with open(f"/proc/self/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total

np.ones((400, 400)) @ np.ones((400, 400))  # the user's own product wakes the pool once
time.sleep(0.5)  # its spin ends
before = ticks()
train(sys.argv[1], "float32", 8)
print("POOL_THREADS", len(numpy_threads))
print("TICKS", ticks() - before)
"""
)


@pytest.mark.skipif(not LINUX, reason="per-thread CPU time from /proc")
@pytest.mark.parametrize("model", ["simple", "deep"])
def test_numpys_blas_threads_get_no_cpu_while_a_network_trains(model):
    """Nothing the library does wakes NumPy's OpenBLAS pool: its threads' CPU time stays
    still while a network trains (it was 0.45 s over 20 SimpleConvNet steps when the library
    used NumPy's BLAS)."""
    result = run_python(QUIET, args=(model,), timeout=600)
    assert_ok(result)
    if int(output_line(result, "POOL_THREADS")) == 0:
        pytest.skip("NumPy's BLAS runs no thread pool here")
    assert int(output_line(result, "TICKS")) <= 1, result.stdout


def test_blas_spin_exponent_is_deprecated_and_ignored():
    with pytest.warns(DeprecationWarning, match="blas_spin_exponent.*no effect"):
        previous = nnkernels.set_config(blas_spin_exponent=16)
    assert previous == {} and "blas_spin_exponent" not in nnkernels.get_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnkernels.set_config(workspace_limit=None)  # other settings warn nothing


WITHOUT_THE_WHEEL = r"""
import sys
sys.modules["scipy_openblas32"] = None  # as on a platform without its wheel
import numpy as np
import nnkernels, nnlayers
from nnlayers import reference
rng = np.random.default_rng(0)
x, W = rng.standard_normal((5, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
dout = rng.standard_normal((5, 4, 7, 6))
for route in ("auto", "matmul"):
    fast = nnlayers.Convolution(W, 0.5, 1, 1, route=route)
    slow = reference.Convolution(W, 0.5, 1, 1)
    np.testing.assert_allclose(fast.forward(x), slow.forward(x), rtol=1e-12)
    np.testing.assert_allclose(fast.backward(dout), slow.backward(dout), rtol=1e-12)
    np.testing.assert_allclose(fast.dW, slow.dW, rtol=1e-12)
A, B = rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
np.testing.assert_allclose(nnkernels.matmul(A, B), A @ B, rtol=1e-12)
info = nnkernels.runtime_info()["blas"]
print("LIBRARY", info["library"])
print("WHY", info["why"])
print("KERNELS", nnkernels.conv_kernels_available())
try:
    nnlayers.Convolution(W, 0.5, route="kernels").forward(x)
except RuntimeError as exc:
    print("ERROR", str(exc).splitlines()[0])
"""


def test_without_the_wheel_the_layers_compute_on_numpys_matmul():
    result = run_python(WITHOUT_THE_WHEEL, timeout=600)
    assert_ok(result)
    assert output_line(result, "LIBRARY") == "NumPy's matmul (fallback)"
    assert "scipy-openblas32 is not installed" in output_line(result, "WHY")
    assert output_line(result, "KERNELS") == "False"
    assert "need the library's BLAS" in output_line(result, "ERROR")


LOADING = r"""
import os
from nnkernels.runtime import blas
import llvmlite.binding  # noqa: F401 - imported before, so that only the load is watched
mask = os.sched_getaffinity(0)
before = set(os.listdir("/proc/self/task"))
print("LOADED", blas.available())
print("NEW_THREADS", len(set(os.listdir("/proc/self/task")) - before))
print("AFFINITY_KEPT", os.sched_getaffinity(0) == mask)
"""


@pytest.mark.skipif(not nnkernels.conv_kernels_available(), reason="no library BLAS here")
@pytest.mark.skipif(not LINUX, reason="thread list and affinity from Linux")
def test_loading_the_library_blas_starts_no_thread_and_keeps_the_affinity():
    """OpenBLAS starts a pool of threads as it loads (they spin ~0.1 s, then sleep); the
    library calls it at one thread and loads it where it counts one core."""
    result = run_python(LOADING, timeout=300)
    assert_ok(result)
    assert output_line(result, "LOADED") == "True"
    assert output_line(result, "NEW_THREADS") == "0"
    assert output_line(result, "AFFINITY_KEPT") == "True"
