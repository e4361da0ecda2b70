"""The training-step benchmark (``python -m nnbench.steps``, also ``python -m
nntrain.stepbench``) runs and reports its ratios."""

import json
import subprocess
import sys

from nnbench import steps


def test_stepbench_smoke(tmp_path, capsys):
    """Every contender in a fresh process of its own, two rounds."""
    out = tmp_path / "steps.json"
    argv = ["--models", "simple", "--quick", "--rounds", "2", "--no-torch", "--json", str(out)]
    assert steps.main(argv) == 0
    printed = capsys.readouterr().out
    assert "SimpleConvNet" in printed and "speedup over the reference" in printed
    result = json.loads(out.read_text())["simple"]
    names = {"reference float64", "nnlayers float64", "nnlayers float32"}
    assert set(result["median_s"]) == names
    assert all(v > 0 for v in result["median_s"].values())
    assert len(result["rounds"]) == 2 and all(set(r) == names for r in result["rounds"])
    assert result["speedup_float64"] > 0


def test_contenders_train_on_the_same_batches(monkeypatch):
    """Every contender's process draws the same batches (and seeds dropout alike)."""
    seen = {}
    real = steps.build_network

    def spy(model, layers, dtype, seed=0):
        net = real(model, layers, dtype, seed)
        gradient = net.gradient

        def recorded(x, t):
            seen.setdefault((layers, dtype), []).append((x.astype("float32").sum(), t.sum()))
            return gradient(x, t)

        net.gradient = recorded
        return net

    monkeypatch.setattr(steps, "build_network", spy)
    for layers, dtype in (
        ("reference", "float64"),
        ("nnlayers", "float64"),
        ("nnlayers", "float32"),
    ):
        steps.step_time("simple", layers, dtype, steps=2, warmup=1)
    batches = list(seen.values())
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)
    assert batches[0] == batches[1] == batches[2]
    assert len({b[0] for b in batches[0]}) == 3  # a new batch every step


def test_entry_point_nntrain_stepbench_still_works():
    proc = subprocess.run(
        [sys.executable, "-m", "nntrain.stepbench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--quick" in proc.stdout, proc.stderr
