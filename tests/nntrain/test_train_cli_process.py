"""``python -m nntrain`` as a user runs it, one subprocess per case: what it prints, its
exit status, what it writes, and where the trained parameters go when writing fails."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from _subprocess_helpers import (
    SRC,
    can_drop_permission_override,
    child_env,
    describe,
    drop_permission_override,
)
from nntrain import MultiLayerNet

#: a quick run: the 2x100 MLP on the 8x8 digits
MLP = ["--model", "mlp", "--digits-size", "8"]


def env(extra=None):
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return child_env({"PYTHONPATH": path, **(extra or {})})


def nntrain(*args, cwd, timeout=300, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "nntrain", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def start_nntrain(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "nntrain", *args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def tree(root):
    """Every path under ``root``, relative to it."""
    return sorted(
        os.path.relpath(os.path.join(base, name), root)
        for base, dirs, files in os.walk(root)
        for name in dirs + files
    )


def one_error_line(result):
    """The single line on stderr (and nothing on stdout) of a refused or failed run."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", describe(result)
    assert lines[0].startswith("nntrain: error: "), describe(result)
    return lines[0]


def loads_into_the_mlp(path):
    net = MultiLayerNet(64, [100, 100], 10, layers="reference", dtype=np.float32)
    net.load_params(path)
    return True


# ---------------------------------------------------------------- --quiet
def test_quiet_prints_one_line_with_the_accuracy_and_the_files(tmp_path):
    result = nntrain("--quiet", *MLP, "--epochs", "2", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", describe(result)
    assert result.stdout.count("\n") == 1, describe(result)
    prefix, written = result.stdout.rstrip("\n").split("; ")
    assert prefix.startswith("final test acc 0.") and len(prefix) == len("final test acc 0.9331")
    assert written == "wrote params.pkl, history.json, learning_curves.png to run"
    assert tree(tmp_path / "run") == ["history.json", "learning_curves.png", "params.pkl"]

    result = nntrain("--quiet", *MLP, "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", describe(result)
    assert result.stdout.endswith("; no --out, no files written\n"), describe(result)
    assert result.stdout.count("\n") == 1


# ---------------------------------------------------------------- refusals
NEEDS_SWEEP = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None, reason="the sweep extra is not installed"
)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "-0.1"], "--lr must be a positive number, got -0.1"),
        (["--lr", "nan"], "--lr must be a positive number, got nan"),
        (["--epochs", "0"], "--epochs 0 trains nothing"),
        (["--epochs", "-1"], "--epochs must be positive, got -1"),
        (["--epochs", "0", "--compare-reference", "--out", "o"], "--out would stay empty"),
        (["--batch-size", "0"], "--batch-size must be positive, got 0"),
        (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["--model", "big"], "argument --model: invalid choice: 'big'"),
        (["--out", "a-file"], "--out a-file: exists and is not a directory"),
        (["--out", "a-file/run"], "--out a-file/run: cannot be created: "),
        (["--out", "made"], "--out made: params.pkl in it is a directory"),
        (["--checkpoint", "made"], "--checkpoint made: is a directory"),
        (["--checkpoint", "a-file/c.npz"], "--checkpoint a-file/c.npz: its directory a-file"),
        (["--data-dir", "."], "--data-dir does not apply to --dataset digits"),
        (["--resume"], "--resume needs --checkpoint"),
        pytest.param(
            ["sweep", "--lr", "-0.1", "--param", "lr=log:1e-3:1e-1"],
            "--lr must be a positive",
            marks=NEEDS_SWEEP,
        ),
        (["sweep", "--trials", "x"], "argument --trials: invalid int value: 'x'"),
        pytest.param(
            ["repeat", "--out", "a-file"],
            "--out a-file: exists and is not a directory",
            marks=NEEDS_SWEEP,
        ),
    ],
)
def test_a_bad_option_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "made" / "params.pkl").mkdir(parents=True)
    before = tree(tmp_path)
    result = nntrain(*args, *MLP, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, describe(result)
    assert message in one_error_line(result)
    assert tree(tmp_path) == before


@pytest.mark.skipif(not can_drop_permission_override(), reason="needs root with CAP_SETPCAP")
@pytest.mark.parametrize("out", ["locked/run", "locked"])
def test_an_out_that_cannot_be_written_is_refused_before_training(tmp_path, out):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o555)
    result = nntrain(
        "--out", out, *MLP, cwd=tmp_path, preexec_fn=drop_permission_override, timeout=120
    )
    assert result.returncode == 2, describe(result)
    assert "not writable" in one_error_line(result)
    assert tree(tmp_path) == ["locked"]


# ---------------------------------------------------------------- a write that fails late
def stop_when(process, condition, timeout=120):
    """Stop ``process`` (SIGSTOP) as soon as ``condition()`` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                "the run ended before the test could stop it\n" + str(process.communicate())
            )
        time.sleep(0.005)
    process.send_signal(signal.SIGSTOP)


def finish(process, timeout=120):
    process.send_signal(signal.SIGCONT)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_when_the_final_write_fails_the_parameters_go_to_a_named_file(tmp_path):
    # --out passes the checks; then, while the network trains, params.pkl in it becomes
    # a directory: the run must not be lost
    run = start_nntrain("--quiet", *MLP, "--epochs", "60", "--out", "run", cwd=tmp_path)
    stop_when(run, (tmp_path / "run").exists)
    assert tree(tmp_path / "run") == [], "the run wrote its files before the test stopped it"
    (tmp_path / "run" / "params.pkl").mkdir()
    result = finish(run)
    assert result.returncode == 1, describe(result)
    line = one_error_line(result)
    prefix = "nntrain: error: cannot write run/params.pkl (Is a directory); "
    assert line.startswith(prefix + "the trained parameters are in "), line
    rescued = line.rsplit(" ", 1)[-1]
    assert os.path.dirname(os.path.dirname(rescued)) == str(tmp_path)
    assert os.path.basename(os.path.dirname(rescued)).startswith("nntrain-run-")
    assert sorted(os.listdir(os.path.dirname(rescued))) == [
        "history.json",
        "learning_curves.png",
        "params.pkl",
    ]
    assert loads_into_the_mlp(rescued)


def test_when_a_checkpoint_write_fails_the_parameters_go_to_a_named_file(tmp_path):
    checkpoint = tmp_path / "ckpt.npz"
    run = start_nntrain(
        "--quiet", *MLP, "--epochs", "60", "--checkpoint", str(checkpoint), cwd=tmp_path
    )
    stop_when(run, checkpoint.exists)
    checkpoint.unlink()
    checkpoint.mkdir()
    result = finish(run)
    assert result.returncode == 1, describe(result)
    line = one_error_line(result)
    assert line.startswith(f"nntrain: error: cannot write {checkpoint} (Is a directory; "), line
    assert "training stopped after epoch " in line
    rescued = line.rsplit(" ", 1)[-1]
    assert os.path.basename(rescued) == "params.pkl" and loads_into_the_mlp(rescued)


# ---------------------------------------------------------------- first run
@pytest.mark.slow
def test_a_first_run_says_that_the_kernels_compile_and_a_second_run_does_not(tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    args = ["--model", "simple", "--digits-size", "8", "--epochs", "1", "--eval-samples", "50"]
    runs = []
    for _ in range(2):
        runs.append(
            subprocess.run(
                [sys.executable, "-m", "nntrain", *args],
                cwd=tmp_path,
                env=env({"NUMBA_CACHE_DIR": str(cache)}),
                capture_output=True,
                text=True,
                timeout=600,
            )
        )
        assert runs[-1].returncode == 0, describe(runs[-1])
    notice = "nntrain: compiling the JIT kernels (first run only"
    first = [line for line in runs[0].stderr.splitlines() if line.startswith(notice)]
    assert len(first) == 1 and " ... done in " in first[0], describe(runs[0])
    assert notice not in runs[1].stderr, describe(runs[1])
