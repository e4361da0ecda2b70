"""``nntrain sweep`` as a user runs it, a subprocess on a real local Dask cluster (worker
processes on 127.0.0.1): how it ends after Ctrl-C and when the study is already complete,
two commands on one ``--out``, and a write that fails, then a resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("optuna")
pytest.importorskip("distributed")
pytest.importorskip("filelock")

from _subprocess_helpers import SRC, child_env, describe  # noqa: E402
from nntrain import MultiLayerNet  # noqa: E402

pytestmark = pytest.mark.slow

#: what Dask prints when a shutdown is not orderly
NOISE = ("Traceback", "KeyboardInterrupt", "CommClosedError", "distributed.", "Error")


def sweep_args(out, trials, workers=2, epochs=2):
    return [
        sys.executable,
        "-m",
        "nntrain",
        "sweep",
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--trials",
        str(trials),
        "--sampler",
        "random",
        "--dataset",
        "digits",
        "--digits-size",
        "28",
        "--train-size",
        "500",
        "--model",
        "mlp",
        "--epochs",
        str(epochs),
        "--param",
        "lr=log:1e-3:1e-1",
    ]


def env():
    return child_env({"PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])})


def start(command, cwd):
    # a session of its own, as a terminal's foreground job: Ctrl-C signals all of it
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process, timeout=180):
    """Wait for ``process``; kill its whole session if it takes longer than ``timeout``."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"did not end within {timeout} s\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(command, cwd, timeout=180):
    return finish(start(command, cwd), timeout)


def running_trials(out):
    path = out / "study.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def wait_until(condition, process, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before {what}\n{process.communicate()}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.02)


def no_noise(stderr):
    found = [word for word in NOISE if word in stderr]
    assert not found, f"{found} on stderr:\n{stderr}"


# ---------------------------------------------------------------- how it ends
@pytest.mark.parametrize("target", ["process", "process group"])
def test_ctrl_c_ends_with_one_line_and_no_dask_traceback(tmp_path, target):
    out = tmp_path / "sweep"
    sweep = start(sweep_args(out, trials=6, epochs=60), tmp_path)
    wait_until(lambda: running_trials(out) >= 2, sweep, "two running trials")
    if target == "process":
        sweep.send_signal(signal.SIGINT)
    else:  # what Ctrl-C in a terminal does: every process of the foreground group
        os.killpg(sweep.pid, signal.SIGINT)
    result = finish(sweep, timeout=60)
    assert result.returncode == 130, describe(result)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("trials:")]
    lines = [line.split("\r")[-1] for line in lines if line.split("\r")[-1].strip()]
    assert lines == ["nntrain sweep: interrupted; run the same command again to continue"], (
        describe(result)
    )
    no_noise(result.stderr)
    assert running_trials(out) == 0


def test_a_complete_study_says_so_and_starts_no_cluster(tmp_path):
    out = tmp_path / "sweep"
    first = run(sweep_args(out, trials=2), tmp_path)
    assert first.returncode == 0, describe(first)
    no_noise(first.stderr)
    for _ in range(2):  # the heartbeat error came once in two tries
        again = run(sweep_args(out, trials=2), tmp_path)
        assert again.returncode == 0, describe(again)
        assert again.stdout.startswith("2 of 2 trials already complete\n"), describe(again)
        assert "running trials on" not in again.stdout, describe(again)
        assert again.stderr == "", describe(again)
    quiet = run(sweep_args(out, trials=2) + ["--quiet"], tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", describe(quiet)
    assert quiet.stdout.count("\n") == 1, describe(quiet)
    assert quiet.stdout.startswith("2 of 2 trials finished; best val acc 0."), describe(quiet)
    assert quiet.stdout.rstrip().endswith(
        f", best_params.pkl, best_trial.json, results.jsonl to {out}"
    )


# ---------------------------------------------------------------- one command per --out
def test_a_second_command_on_the_same_out_is_refused_at_once(tmp_path):
    out = tmp_path / "sweep"
    first = start(sweep_args(out, trials=6, epochs=60), tmp_path)
    try:
        wait_until(lambda: running_trials(out) >= 1, first, "a running trial")
        started = time.monotonic()
        second = run(sweep_args(out, trials=6, epochs=60), tmp_path, timeout=60)
        assert time.monotonic() - started < 30
        assert second.returncode == 2, describe(second)
        assert second.stdout == "" and second.stderr.count("\n") == 1, describe(second)
        line = second.stderr.strip()
        assert line.startswith(f"nntrain: error: --out {out} is in use by nntrain sweep (pid "), (
            line
        )
        assert f"(pid {first.pid} on " in line and "one command per --out at a time" in line
        assert first.poll() is None, "the first sweep must go on"
    finally:
        first.send_signal(signal.SIGINT)
        result = finish(first, timeout=60)
    assert result.returncode == 130, describe(result)
    # after the first ended, the same command runs (and continues the study)
    again = run(sweep_args(out, trials=1, epochs=60) + ["--quiet"], tmp_path)
    assert again.returncode == 0, describe(again)


# ---------------------------------------------------------------- a failed write
def test_a_failed_write_is_an_error_naming_the_file_and_a_resume_writes_it(tmp_path):
    out = tmp_path / "sweep"
    command = sweep_args(out, trials=1, workers=1, epochs=60)
    sweep = start(command, tmp_path)
    wait_until(lambda: running_trials(out) >= 1, sweep, "a running trial")
    sweep.send_signal(signal.SIGSTOP)  # so that the trial cannot be recorded meanwhile
    try:
        assert not (out / "results.jsonl").exists(), "the trial finished before the test"
        (out / "best_params.pkl").mkdir()  # an unwritable file in --out
    finally:
        sweep.send_signal(signal.SIGCONT)
    result = finish(sweep)
    assert result.returncode == 1, describe(result)
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        f"nntrain: error: cannot write {out / 'best_params.pkl'} (Is a directory); "
        "the study keeps every finished trial"
    ), describe(result)
    no_noise(result.stderr.replace(last, ""))
    recorded = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["state"] for r in recorded] == ["COMPLETE"]

    (out / "best_params.pkl").rmdir()
    resumed = run(command, tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert "1 of 1 trials already complete" in resumed.stdout, describe(resumed)
    assert "training the best trial again to save its network" in resumed.stdout
    wrote = resumed.stdout.splitlines()[-1]
    assert wrote.startswith("wrote ") and "best_params.pkl" in wrote, describe(resumed)
    for name in wrote[len("wrote ") : wrote.rindex(" to ")].split(", "):
        assert (out / name).is_file(), name
    best = json.loads((out / "best_trial.json").read_text())
    assert best["trial"] == 0 and best["val_acc"] == recorded[0]["val_acc"][-1]
    net = MultiLayerNet(784, [100, 100], 10, layers="reference", dtype=np.float32)
    net.load_params(out / "best_params.pkl")
