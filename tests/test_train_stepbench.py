"""nntrain.stepbench: the training-step timing command runs and reports its ratios."""

import json

from nntrain import stepbench


def test_stepbench_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stepbench, "_torch_available", lambda: False)
    out = tmp_path / "steps.json"
    assert stepbench.main(["--models", "simple", "--steps", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SimpleConvNet" in printed and "speedup over the reference" in printed
    medians = json.loads(out.read_text())["simple"]
    assert set(medians) == {"reference float64", "nnlayers float64", "nnlayers float32"}
    assert all(v > 0 for v in medians.values())
