"""Smoke tests of the comparison command (``python -m nnbench.compare``, also ``python -m
nnlayers.bench``), its case table and timer (tiny batches, 1 round: not a measurement)."""

import json
import subprocess
import sys

import pytest

from nnbench import compare as bench
from nnbench.cases import (
    CASE_NAMES,
    DEFAULT_CASE_NAMES,
    build_contenders,
    get_cases,
    torch_available,
)
from nnbench.timing import median_ratio, time_interleaved


def test_quick_run_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(
        [
            "--quick",
            "--repeat",
            "1",
            "--warmup",
            "0",
            "--no-torch",
            "--no-extras",
            "--dtype",
            "float32",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "speedup vs ref" in text and "conv A" in text and "batchnorm C" in text
    data = json.loads(out.read_text())
    rows = data["results"]
    assert {(r["case"], r["dtype"]) for r in rows} == {(c, "float32") for c in DEFAULT_CASE_NAMES}
    for r in rows:
        assert r["torch_s"] is None
        if r["nnlayers_s"] is not None:
            assert r["nnlayers_s"] > 0
        if r["case"] == "bn_c":
            assert r["reference_s"] is None and r["speedup_vs_reference"] is None
        else:
            assert r["reference_s"] > 0
    assert data["meta"]["quick"] is True


def test_markdown_and_case_subset(capsys):
    bench.main(
        [
            "--quick",
            "--repeat",
            "1",
            "--warmup",
            "0",
            "--no-torch",
            "--no-extras",
            "--dtype",
            "float64",
            "--cases",
            "conv_a,pool_a,bn_b",
            "--markdown",
        ]
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| case | dtype |")
    assert len(lines) == 2 + 3  # header, rule, three cases
    assert all("float64" in ln for ln in lines[2:])


def test_thread_scaling_quick():
    report = bench.thread_scaling(["float32"], repeat=1, warmup=0, quick=True)
    if "error" in report:
        pytest.skip(report["error"])
    (row,) = report["rows"]
    assert row["one_thread_s"] > 0 and row["two_threads_s"] > 0


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        bench.main(["--cases", "conv_z"])
    with pytest.raises(SystemExit):
        bench.main(["--dtype", "float16"])


def test_contenders_compute_the_same_forward_backward():
    """The timed callables do real work: nnlayers' gradients match the reference's."""
    import numpy as np

    for case in get_cases("conv_b,pool_b,bn_b"):
        fns = build_contenders(case.scaled(True), "float64")
        np.testing.assert_allclose(fns["nnlayers"](), fns["reference"](), rtol=1e-8, atol=1e-10)


@pytest.mark.slow
@pytest.mark.skipif(not torch_available(), reason="PyTorch is not installed")
def test_torch_separate_process(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnlayers.bench",
            "--quick",
            "--repeat",
            "1",
            "--warmup",
            "0",
            "--no-extras",
            "--dtype",
            "float32",
            "--cases",
            "conv_a",
            "--torch-separate",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["results"]
    assert all(r["torch_s"] > 0 and r["ratio_vs_torch"] > 0 for r in rows)


_PROBE_COVERAGE = """
from nnkernels.kernels import activations, batchnorm, columns, convolution, pooling, products
from nnkernels.runtime import jit as _jit
from nnbench import probe
from nnbench.cases import build_contenders, get_cases


def loaded():
    counts = {}
    for module in (activations, batchnorm, columns, convolution, pooling, products):
        for name, obj in vars(module).items():
            if isinstance(obj, _jit._Kernel):
                counts[module.__name__, name] = len(obj.dispatcher.overloads)
    return counts


for _, call in probe._kernel_calls("float32") + probe._layer_calls("float32"):
    call()
before = loaded()
build_contenders(get_cases("conv_a")[0], "float32", ("nnlayers",))["nnlayers"]()
new = sorted(str(k) for k, v in loaded().items() if before.get(k) != v)
print("NEW:", new)
"""


def test_cold_probe_loads_what_the_warm_probe_runs():
    """The warm start-up probe times conv A on the cache the cold probe filled: every
    kernel conv A takes (the fused convolution kernels where available) must be among the
    cold probe's calls, or the 'warm' figure includes a compile. Checked in a fresh
    interpreter by the kernels' loaded signatures (whether from the cache or compiled)."""
    from _subprocess_helpers import run_python

    done = run_python(_PROBE_COVERAGE, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NEW: []" in done.stdout, done.stdout


def test_warmup_time_calls_each_contender_until_it_has_spent_that_long():
    import time

    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.004)

    timed = time_interleaved({"fast": fast, "slow": slow}, repeat=3, warmup=1, warmup_time=0.02)
    # at most 5 untimed calls of >= 4 ms reach 20 ms; fewer when sleep overshoots under load
    assert 1 + 2 + 3 <= calls["slow"] <= 1 + 5 + 3
    assert calls["fast"] > 100  # microsecond calls need many to reach 20 ms
    assert [len(timed[name][1]) for name in calls] == [3, 3]
    calls.update(fast=0, slow=0)
    time_interleaved({"fast": fast, "slow": slow}, repeat=3, warmup=1, warmup_time=0.0)
    assert calls == {"fast": 4, "slow": 4}


def test_negative_warmup_time_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["--warmup-time", "-1", "--no-torch", "--no-extras", "--quick"])


def test_entry_point_nnlayers_bench_lists_the_cases():
    """``python -m nnlayers.bench`` still works: it runs nnbench's comparison command."""
    proc = subprocess.run(
        [sys.executable, "-m", "nnlayers.bench", "--list", "--cases", "all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == list(CASE_NAMES)


def test_case_table_defaults_and_deep_layers():
    assert set(DEFAULT_CASE_NAMES) < set(CASE_NAMES)
    assert {"conv_l2", "conv_l7", "conv_l12"} <= set(CASE_NAMES) - set(DEFAULT_CASE_NAMES)
    assert [c.name for c in get_cases()] == list(DEFAULT_CASE_NAMES)
    (case,) = get_cases("conv_l7")
    assert case.short == "L7" and case.scaled(True).shape[0] == 4


def test_before_hook_runs_untimed_ahead_of_every_call():
    seen = []
    timed = time_interleaved(
        {"a": lambda: seen.append("a"), "b": lambda: seen.append("b")},
        repeat=2,
        warmup=1,
        before=lambda name: seen.append(f"<{name}"),
    )
    assert seen == ["<a", "a", "<b", "b"] * 3
    assert median_ratio(timed["a"][1], timed["a"][1]) == 1.0


def test_probe_runs_in_a_fresh_interpreter_without_path_tricks(tmp_path):
    """``python -m nnbench.probe warm`` (what the comparison's warm start runs)."""
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-m", "nnbench.probe", "warm", "float32", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["import_s"] > 0 and result["second_s"] > 0


def test_the_product_never_imports_nnbench():
    """Only the two entry-point modules reach nnbench; importing the packages does not."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    entry_points = {src / "nnlayers" / "bench.py", src / "nntrain" / "stepbench.py"}
    for package in ("nnkernels", "nnlayers", "nntrain"):
        for path in (src / package).rglob("*.py"):
            if path not in entry_points:
                assert "nnbench" not in path.read_text(), path
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, nnlayers, nntrain, nnkernels; print('nnbench' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "False", done.stderr
