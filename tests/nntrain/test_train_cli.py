"""nntrain command line: smoke runs writing outputs, comparisons, argument errors."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from test_train_data import write_dataset

import nnlayers
from nntrain import SimpleConvNet, cli

FAST_READY = hasattr(nnlayers, "Convolution")
LAYERS = ["nnlayers" if FAST_READY else "reference"]


@pytest.mark.parametrize("layers", LAYERS + ["reference"])
def test_one_epoch_on_digits_writes_outputs(tmp_path, layers, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "--epochs",
                "1",
                "--out",
                str(out),
                "--layers",
                layers,
                "--seed",
                "3",
                "--digits-size",
                "8",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "epoch   1/1" in stdout and "final test acc" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "history.json",
        "learning_curves.png",
        "params.pkl",
    ]
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "history.json").read_text())
    assert len(record["train_loss"]) == 15 and len(record["test_acc"]) == 1
    assert record["final_test_acc"] == record["test_acc"][-1] > 0.3
    assert record["config"]["model"] == "simple" and record["config"]["epochs"] == 1
    with open(out / "params.pkl", "rb") as f:
        params = pickle.load(f)
    assert params["W1"].shape == (30, 1, 3, 3) and params["W1"].dtype == np.float32
    net = SimpleConvNet(
        input_dim=(1, 8, 8),
        conv_param={"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1},
        layers="reference",
        dtype=np.float32,
    )
    net.load_params(out / "params.pkl")


def test_same_seed_same_history(tmp_path):
    runs = []
    for name in ("a", "b"):
        cli.main(
            [
                "--epochs",
                "1",
                "--quiet",
                "--model",
                "mlp",
                "--layers",
                LAYERS[0],
                "--dtype",
                "float64",
                "--out",
                str(tmp_path / name),
            ]
        )
        runs.append(json.loads((tmp_path / name / "history.json").read_text()))
    assert runs[0]["train_loss"] == runs[1]["train_loss"]


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    common = ["--quiet", "--model", "mlp", "--layers", LAYERS[0], "--seed", "5"]
    cli.main(common + ["--epochs", "2", "--out", str(tmp_path / "full")])
    ckpt = str(tmp_path / "ckpt.pkl")
    cli.main(common + ["--epochs", "1", "--checkpoint", ckpt])
    cli.main(
        common
        + ["--epochs", "2", "--checkpoint", ckpt, "--resume", "--out", str(tmp_path / "resumed")]
    )
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert resumed["train_loss"] == full["train_loss"]
    assert resumed["test_acc"] == full["test_acc"]


def test_mnist_dir_dataset(tmp_path, capsys):
    write_dataset(tmp_path / "idx", n_train=20, n_test=6, h=6, w=6, gz=True)
    code = cli.main(
        [
            "--dataset",
            "mnist-dir",
            "--data-dir",
            str(tmp_path / "idx"),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--quiet",
            "--layers",
            LAYERS[0],
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.endswith("; no --out, no files written\n")


@pytest.mark.skipif(not FAST_READY, reason="nnlayers top-level exports not available yet")
def test_compare_reference(capsys):
    cli.main(
        [
            "--compare-reference",
            "--compare-steps",
            "2",
            "--model",
            "mlp",
            "--dtype",
            "float64",
            "--epochs",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert "speedup" in out and "nnlayers.reference" in out


def test_threads_option(monkeypatch):
    calls = []
    monkeypatch.setattr(nnlayers, "set_num_threads", calls.append, raising=False)
    argv = ["--epochs", "1", "--quiet", "--threads", "1", "--layers", "reference"]
    cli.main([*argv, "--model", "mlp", "--digits-size", "8"])
    assert calls == [1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "mnist-dir"], "needs --data-dir"),
        (["--epochs", "-1"], "--epochs must be positive"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--dataset", "digits", "--data-dir", "/tmp"], "does not apply"),
        (["--dataset", "mnist-dir", "--data-dir", "/nonexistent/dir"], "not a directory"),
        (["--resume"], "needs --checkpoint"),
    ],
)
def test_argument_errors(argv, message, monkeypatch, capsys):
    monkeypatch.delenv("NNTRAIN_MNIST_DIR", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("nntrain: error: ") and message in err


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "nntrain", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--compare-reference" in result.stdout and "--model" in result.stdout


def test_missing_matplotlib_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'nnkernels\[train\]'"):
        cli.plot_curves(object(), "unused.png")


def test_import_needs_only_numpy():
    code = (
        "import sys, nntrain, nntrain.cli; "
        "print(sorted(m for m in ('tqdm', 'matplotlib', 'sklearn', 'nnlayers', 'nnkernels', "
        "'numba') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
