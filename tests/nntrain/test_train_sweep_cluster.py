"""nntrain sweep against a real ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, one of them killed mid-sweep: every trial must still be accounted for, and a
trial's curve must not depend on the worker that ran it."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("distributed")

import optuna  # noqa: E402

from _subprocess_helpers import SRC, child_env  # noqa: E402
from nntrain.sweep.trial import run_trial  # noqa: E402

pytestmark = pytest.mark.slow
START_TIMEOUT = 60


def dask_command(*args):
    """``dask ARGS`` from this interpreter's environment."""
    dask = Path(sys.executable).with_name("dask")
    if dask.exists():
        return [str(dask), *args]
    found = shutil.which("dask")
    if found is None:
        pytest.skip("the dask command line is not installed")
    return [found, *args]


def env_with_src():
    return child_env(
        {
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "NUMBA_NUM_THREADS": 1,
            "OMP_NUM_THREADS": 1,
            "OPENBLAS_NUM_THREADS": 1,
        }
    )


def wait_until(condition, timeout, what, processes=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for process in processes:
            if process.poll() is not None:
                pytest.fail(
                    f"{what}: a process exited early ({process.args}): {process.communicate()}"
                )
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout} s")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers (no nanny: a kill is final); yields
    ``(address, [worker processes])`` and stops all of them afterwards."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = []

    def start(name, *args):
        log = open(logs / f"{name}.log", "w")
        process = subprocess.Popen(
            dask_command(*args),
            env=env_with_src(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
        processes.append(process)
        return process

    try:
        start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        wait_until(scheduler_file.exists, START_TIMEOUT, "scheduler file", processes)
        time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = [
            start(
                f"worker{i}",
                "worker",
                address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--name",
                f"w{i}",
            )
            for i in range(2)
        ]
        from distributed import Client

        with Client(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield address, workers
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def sweep_command(address, out, trials):
    return [
        sys.executable,
        "-m",
        "nntrain",
        "sweep",
        "--scheduler",
        address,
        "--connect-timeout",
        "20",
        "--out",
        str(out),
        "--trials",
        str(trials),
        "--sampler",
        "random",
        "--dataset",
        "digits",
        "--digits-size",
        "28",
        "--train-size",
        "600",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--quiet",
        "--param",
        "hidden_size=500",
        "--param",
        "hidden_layers=4",
        "--param",
        "lr=log:1e-3:1e-1",
        "--param",
        "weight_decay=log:1e-8:1e-4",
    ]


def read_results(out):
    path = out / "results.jsonl"
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_sweep_survives_a_killed_worker_and_curves_match_in_process(cluster, tmp_path):
    address, workers = cluster
    out = tmp_path / "sweep"
    trials = 8
    sweep = subprocess.Popen(
        sweep_command(address, out, trials),
        env=env_with_src(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # once trials are flowing, kill worker w0 while it runs one: Dask must re-run
        # that trial elsewhere (or the sweep record it lost and ask another)
        wait_until(lambda: len(read_results(out)) >= 1, 180, "first trial", [sweep])
        from distributed import Client

        with Client(address, timeout=START_TIMEOUT) as client:
            w0 = next(
                addr
                for addr, info in client.scheduler_info()["workers"].items()
                if info["name"] == "w0"
            )
            wait_until(lambda: client.processing().get(w0), 60, "a trial on w0", [sweep])
            workers[0].kill()
        workers[0].wait(timeout=15)
        _, err = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err

    study = optuna.load_study(
        study_name="nntrain-sweep", storage=f"sqlite:///{out / 'study.sqlite3'}"
    )
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == trials
    lost = [t for t in study.trials if t.state.name == "FAIL"]
    assert all(t.user_attrs["failure"] == "lost" for t in lost)
    assert "RUNNING" not in states
    numbers = sorted(r["number"] for r in read_results(out))
    assert numbers == list(range(len(study.trials)))
    completed_by = {t.user_attrs["worker"] for t in study.trials if t.state.name == "COMPLETE"}
    assert len(completed_by) >= 1 and len(study.trials) in (trials, trials + len(lost))

    # determinism: a trial re-run here, alone and single-threaded, gives the same curves
    stored = study.user_attrs["nntrain_sweep_config"]
    config = {k: stored[k] for k in ("model", "epochs", "data", "defaults")}
    best = study.best_trial
    again = run_trial(config, best.user_attrs["all_params"], best.user_attrs["seed"])
    assert again["status"] == "complete"
    assert again["val_acc"] == best.user_attrs["val_acc"]
    assert again["epoch_loss"] == best.user_attrs["epoch_loss"]
    assert again["test_acc"] == best.user_attrs["test_acc"]
