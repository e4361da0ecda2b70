"""nntrain sweep / repeat end to end on tiny data: option errors, an in-process local
cluster, interrupt and resume against the SQLite study, determinism, multi-seed runs."""

import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytest.importorskip("optuna")
pytest.importorskip("distributed")

import optuna  # noqa: E402

from _subprocess_helpers import SRC, child_env  # noqa: E402
from nntrain import cli  # noqa: E402
from nntrain.sweep.runner import trial_seed  # noqa: E402
from nntrain.sweep.trial import run_trial  # noqa: E402

TINY = [
    "--dataset",
    "digits",
    "--digits-size",
    "8",
    "--model",
    "mlp",
    "--epochs",
    "2",
    "--param",
    "lr=log:1e-3:3e-1",
    "--param",
    "weight_decay=log:1e-8:1e-4",
    "--quiet",
]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def results(out):
    return read_jsonl(out / "results.jsonl")


def load_study(out, name="nntrain-sweep"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.sqlite3'}")


def refusal(argv, capsys):
    """The one line ``cli.main(argv)`` refuses with (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("nntrain: error: "), err
    return err


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--param", "foo=log:1:2"], "--param foo=log:1:2: unknown parameter 'foo'"),
        (["--param", "lr=log:0.1:0.01"], "lr: low must be < high"),
        (["--param", "lr=log:0:1"], "lr: a log range needs a positive low bound"),
        (
            ["--param", "lr=log:1e-3:1", "--space", "/nonexistent/space.toml"],
            "--space /nonexistent/space.toml: cannot read the file",
        ),
        (
            ["--param", "lr=log:1e-3:1", "--storage", "sqlite:////proc/no/such/study.db"],
            "--storage sqlite:////proc/no/such/study.db: cannot create /proc/no/such",
        ),
        (["--param", "lr=0.1"], "nothing to search"),
        (["--param", "lr=log:1e-3:1", "--trials", "0"], "--trials must be positive"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_work(tmp_path, extra, message, capsys):
    out = tmp_path / "out"
    assert message in refusal(["sweep", "--out", str(out), *extra], capsys)
    assert not out.exists()


def test_unknown_sampler_names_the_option(tmp_path, capsys):
    line = refusal(["sweep", "--out", str(tmp_path), "--sampler", "grid"], capsys)
    assert "argument --sampler: invalid choice: 'grid'" in line


def test_unreadable_toml_is_an_error(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text("[space]\nlr = {log = [1e-4,\n")
    line = refusal(["sweep", "--out", str(tmp_path / "out"), "--space", str(space)], capsys)
    assert re.search(r"--space .*space.toml: not valid TOML", line)


def test_unwritable_storage_path_is_an_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/study.db"
    argv = ["sweep", "--out", str(tmp_path / "out"), "--storage", url, *TINY]
    line = refusal(argv, capsys)
    assert f"--storage {url}: {blocker} exists and is not a directory" in line
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_fails_within_the_timeout(tmp_path, capsys):
    start = time.monotonic()
    argv = ["sweep", "--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"]
    line = refusal([*argv, "--connect-timeout", "2", *TINY], capsys)
    assert "--scheduler tcp://127.0.0.1:9: no Dask scheduler answered within 2 s" in line
    assert time.monotonic() - start < 15
    assert not (tmp_path / "study.sqlite3").exists()


# ---------------------------------------------------------------- a sweep
def test_small_sweep_on_an_in_process_local_cluster(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        cli.main(
            [
                "sweep",
                "--out",
                str(out),
                "--trials",
                "4",
                "--workers",
                "2",
                "--local-cluster",
                "threads",
                "--sampler",
                "random",
                *TINY[:-1],
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "dashboard http://127.0.0.1:" in printed and "val acc" in printed
    study = load_study(out)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4
    for t in done:
        attrs = t.user_attrs
        assert len(attrs["val_acc"]) == 2 and len(attrs["train_acc"]) == 2
        assert 0 <= attrs["test_acc"] <= 1 and attrs["worker"].startswith("tcp://127.0.0.1:")
        assert attrs["seed"] == trial_seed(0, t.number) and t.value == attrs["val_acc"][-1]
    assert sorted(r["number"] for r in results(out)) == [0, 1, 2, 3]
    for name in ("best_curves.png", "lr_weight_decay.png", "history.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    best = json.loads((out / "best_trial.json").read_text())
    assert best["trial"] == study.best_trial.number
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"COMPLETE": 4}

    # determinism: the best trial re-run here, alone, gives the same curves
    params = study.best_trial.user_attrs["all_params"]
    seed = study.best_trial.user_attrs["seed"]
    config = best_config(out)
    again = run_trial(config, params, seed)
    assert again["val_acc"] == study.best_trial.user_attrs["val_acc"]
    assert again["epoch_loss"] == study.best_trial.user_attrs["epoch_loss"]


# ---------------------------------------------------------------- worker settings
def test_local_process_workers_keep_malloc_adaptive_and_run_no_profiler(monkeypatch):
    # Dask's nanny would set MALLOC_TRIM_THRESHOLD_=65536 in the workers, which maps every
    # array above 128 KiB afresh, and its workers would sample the trial's stack every
    # 10 ms; the sweep's local cluster does neither
    from nntrain.sweep.cluster import open_executor, worker_settings

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    executor = open_executor(None, 1, connect_timeout=30, dashboard=False)
    try:
        settings = executor.submit(worker_settings).result(timeout=120)
        pid = executor.submit(os.getpid).result(timeout=120)
    finally:
        executor.close()
    assert pid != os.getpid()  # a worker process, started by Dask's nanny
    assert settings == {}


def test_warm_up_loads_data_and_the_spaces_kernels_on_every_worker():
    # data and kernels load on each worker while the client opens the study; a space
    # that can turn batch norm on warms its kernels too
    from nntrain.sweep import trial
    from nntrain.sweep.cli import build_space, parse_args, trial_config
    from nntrain.sweep.cluster import open_executor

    args = parse_args(["sweep", "--out", "unused", *TINY, "--param", "batchnorm=choice:0,1"])
    config, params = trial_config(args), build_space(args).warm_up_params()
    assert params == {"batchnorm": True}
    executor = open_executor(None, 2, connect_timeout=30, dashboard=False)
    try:
        for future in executor.warm_up(trial.warm_worker, config, params):
            future.result(timeout=120)
        loaded = executor.client.run(lambda: (len(trial._DATA), sorted(trial._WARM)))
    finally:
        executor.close()
    assert len(loaded) == 2
    expected = (1, [("float32", "batchnorm"), ("float32", "products"), ("float32", "relu")])
    assert all(state == expected for state in loaded.values()), loaded


@pytest.mark.parametrize(
    "param, expected",
    [
        ("lr=log:1e-3:1e-1", {}),
        ("batchnorm=true", {"batchnorm": True}),
        ("batchnorm=false", {"batchnorm": False}),
        ("batchnorm=choice:false,true", {"batchnorm": True}),
        ("hidden_size=64", {"hidden_size": 64}),
    ],
)
def test_warm_up_params_cover_what_the_space_can_run(param, expected):
    from nntrain.sweep.cli import build_space, parse_args

    args = parse_args(["sweep", "--out", "unused", *TINY, "--param", param])
    params = build_space(args).warm_up_params()
    assert {k: v for k, v in params.items() if k not in ("lr", "weight_decay")} == expected


def test_the_documented_worker_config_makes_the_local_clusters_choices():
    import dask.config

    from nntrain.sweep.cluster import LOCAL_CLUSTER_CONFIG

    docs = os.path.join(os.path.dirname(SRC), "docs")
    collected = dask.config.collect(paths=[docs], env={})
    with dask.config.set(collected):
        for key, value in LOCAL_CLUSTER_CONFIG.items():
            assert dask.config.get(key) == value, key


@pytest.mark.parametrize("command", ["sweep", "repeat"])
def test_a_worker_with_dasks_default_settings_gets_one_warning(
    command, tmp_path, capsys, monkeypatch
):
    # thread workers share this process's environment and its Dask settings: with the
    # local cluster's own settings left out, a worker runs as a remote one started with
    # Dask's defaults would
    import dask.config

    from nntrain.sweep import cluster

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setattr(cluster, "LOCAL_CLUSTER_CONFIG", {})
    out = tmp_path / command
    argv = [command, "--out", str(out), "--workers", "1", "--local-cluster", "threads"]
    if command == "sweep":
        argv += ["--trials", "3", *TINY]
    else:
        argv += ["--seeds", "3", "--dataset", "digits", "--digits-size", "8", "--epochs", "1"]
        argv += ["--param", "lr=0.05", "--quiet"]
    with dask.config.set({cluster.PROFILE_SETTING: True}):
        assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("nntrain: warning: worker") == 1, err
    assert "runs with MALLOC_TRIM_THRESHOLD_=65536" in err
    assert "Dask's profiler on" in err
    expected = {"MALLOC_TRIM_THRESHOLD_": "65536", "dask_profiler": True}
    lines = results(out) if command == "sweep" else read_jsonl(out / "repeat.jsonl")
    assert len(lines) == 3
    assert all(r["worker_settings"] == expected for r in lines)


WARMED_TRIAL = """
import json, sys
from nnkernels.runtime import jit as _jit
from nntrain.sweep.trial import run_trial, warm_jit
model, params = json.loads(sys.argv[1])
config = {
    "model": model,
    "epochs": 1,
    "data": {"dataset": "digits", "data_dir": None, "digits_size": 28, "flatten": model == "mlp",
             "dtype": "float32", "train_size": 250, "val_fraction": 0.2, "split_seed": 0},
    "defaults": {"lr": 0.01, "optimizer": "sgd", "batch_size": 100, "weight_decay": 0.0,
                 "dropout": 0.0, "batchnorm": False, "hidden_size": 20, "hidden_layers": 2},
}
def dispatchers():  # every kernel made so far
    return {id(k): k for k in _jit.all_kernels()}
calls = []
original = warm_jit.__globals__["warm_jit"]
def counting(dtype, groups=None):
    original(dtype, groups)
    calls.append(sorted(groups))
    calls.append({key: len(k.dispatcher.overloads) for key, k in dispatchers().items()})
warm_jit.__globals__["warm_jit"] = counting
result = run_trial(config, params, 1)
assert result["status"] == "complete", result
groups, loaded = calls[0], calls[1]
grown = [k.__name__ for key, k in dispatchers().items()
         if len(k.dispatcher.overloads) > loaded.get(key, 0)]
print(json.dumps({"groups": groups, "grown": grown}))
"""


@pytest.mark.parametrize(
    "model, params, groups",
    [
        ("mlp", {}, ["products", "relu"]),
        ("mlp", {"batchnorm": True}, ["batchnorm", "products", "relu"]),
        (
            "simple",
            {},
            ["convolution", "im2col/col2im per sample", "max pooling", "products", "relu"],
        ),
    ],
)
def test_a_trial_warms_every_kernel_it_runs_and_no_other_group(model, params, groups):
    # in a fresh process: after warm_jit(dtype, kernel_groups(network)), the trial itself
    # loads or compiles no kernel outside the file lock
    done = subprocess.run(
        [sys.executable, "-c", WARMED_TRIAL, json.dumps([model, params])],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["groups"] == groups
    assert report["grown"] == []


def best_config(out):
    """The trial configuration of the sweep in ``out`` (as stored with the study)."""
    stored = load_study(out).user_attrs["nntrain_sweep_config"]
    return {k: stored[k] for k in ("model", "epochs", "data", "defaults")}


def test_diverging_and_raising_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sweep"
    cli.main(
        [
            "sweep",
            "--out",
            str(out),
            "--trials",
            "3",
            "--workers",
            "0",
            "--dataset",
            "digits",
            "--digits-size",
            "8",
            "--epochs",
            "2",
            "--quiet",
            "--param",
            "lr=log:1e6:1e8",
            "--optimizer",
            "sgd",
        ]
    )
    states = {t.state.name for t in load_study(out).trials}
    assert states == {"FAIL"}
    assert all(r["status"] == "diverged" and "non-finite" in r["reason"] for r in results(out))


def test_a_raising_trial_returns_its_reason():
    config = {
        "model": "mlp",
        "epochs": 1,
        "defaults": {"optimizer": "sgd", "batch_size": 50},
        "data": {
            "dataset": "digits",
            "data_dir": None,
            "digits_size": 8,
            "flatten": True,
            "dtype": "float32",
            "train_size": 200,
            "val_fraction": 0.2,
            "split_seed": 0,
        },
    }
    result = run_trial(config, {"lr": -1.0}, seed=1)
    assert result["status"] == "error" and result["test_acc"] is None
    assert result["reason"].startswith("ValueError: lr") and "Traceback" in result["traceback"]


def test_median_pruner_stops_trials_below_the_median(tmp_path):
    out = tmp_path / "sweep"
    cli.main(
        [
            "sweep",
            "--out",
            str(out),
            "--trials",
            "10",
            "--workers",
            "0",
            "--pruner",
            "median",
            "--sampler",
            "random",
            "--dataset",
            "digits",
            "--digits-size",
            "8",
            "--epochs",
            "3",
            "--quiet",
            "--param",
            "lr=log:1e-5:1e-1",
        ]
    )
    study = load_study(out)
    states = [t.state.name for t in study.trials]
    assert len(states) == 10 and states[:5] == ["COMPLETE"] * 5
    assert "PRUNED" in states


def test_book_preset_with_overrides_trains_the_books_network(tmp_path):
    out = tmp_path / "book"
    assert (
        cli.main(
            [
                "sweep",
                "--preset",
                "book",
                "--dataset",
                "digits",
                "--trials",
                "2",
                "--epochs",
                "1",
                "--workers",
                "0",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    study = load_study(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    stored = study.user_attrs["nntrain_sweep_config"]
    assert stored["data"]["train_size"] == 500 and stored["data"]["val_fraction"] == 0.2
    assert stored["defaults"]["optimizer"] == "sgd" and stored["epochs"] == 1
    assert stored["space"] == {
        "hidden_layers": "6",
        "hidden_size": "100",
        "lr": "log:1e-06:0.01",
        "weight_decay": "log:1e-08:0.0001",
    }
    for t in study.trials:
        assert 1e-6 <= t.params["lr"] <= 1e-2 and 1e-8 <= t.params["weight_decay"] <= 1e-4
        assert len(t.user_attrs["val_acc"]) == 1
    best = json.loads((out / "best_trial.json").read_text())
    assert best["params"]["hidden_layers"] == 6 and best["input_shape"] == [784]
    with open(out / "best_params.pkl", "rb") as f:
        params = pickle.load(f)
    assert sorted(params) == sorted([f"W{i}" for i in range(1, 8)] + [f"b{i}" for i in range(1, 8)])


def test_tpe_sweep_with_choices_and_batch_norm(tmp_path):
    out = tmp_path / "tpe"
    assert (
        cli.main(
            [
                "sweep",
                "--sampler",
                "tpe",
                "--trials",
                "3",
                "--workers",
                "0",
                "--out",
                str(out),
                "--quiet",
                "--dataset",
                "digits",
                "--digits-size",
                "8",
                "--epochs",
                "1",
                "--param",
                "optimizer=choice:sgd,adam",
                "--param",
                "batchnorm=choice:true,false",
                "--param",
                "dropout=float:0:0.3",
                "--param",
                "hidden_size=int:20:40",
            ]
        )
        == 0
    )
    assert [t.state.name for t in load_study(out).trials] == ["COMPLETE"] * 3


# ---------------------------------------------------------------- interrupt and resume
def start_sweep(out, trials, extra=()):
    command = [
        sys.executable,
        "-m",
        "nntrain",
        "sweep",
        "--out",
        str(out),
        "--workers",
        "0",
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
        "simple",
        "--epochs",
        "1",
        "--quiet",
        "--param",
        "lr=log:1e-3:1e-2",
        "--optimizer",
        "adam",
        *extra,
    ]
    env = child_env({"PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])})
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_running_trial(out, count, process, timeout=120):
    """Wait until ``count`` trials are in the results file and another one is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "results.jsonl").exists() and len(results(out)) >= count and running_trials(out):
            return
        if process.poll() is not None:
            pytest.fail(f"sweep exited early: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no {count} results and a running trial within {timeout} s")


def running_trials(out):
    with sqlite3.connect(out / "study.sqlite3") as db:
        return db.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]


@pytest.mark.slow
def test_interrupt_and_crash_then_resume_keeps_every_trial(tmp_path):
    out = tmp_path / "sweep"
    trials = 6
    # Ctrl-C: the client tells the running trial FAIL (interrupted) itself
    process = start_sweep(out, trials)
    try:
        wait_for_running_trial(out, 1, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "run the same command again to continue" in err
    assert running_trials(out) == 0
    kept = {r["number"]: r["value"] for r in results(out) if r["state"] == "COMPLETE"}

    # a crash (SIGKILL): the trial is left RUNNING in the study until the next run
    process = start_sweep(out, trials)
    try:
        wait_for_running_trial(out, len(results(out)) + 1, process)
        process.kill()
        process.communicate(timeout=30)
    finally:
        process.kill()

    process = start_sweep(out, trials)
    try:
        _, err = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 0, err
    study = load_study(out)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == trials
    assert set(states) <= {"COMPLETE", "FAIL"} and running_trials(out) == 0
    failures = [t.user_attrs["failure"] for t in study.trials if t.state.name == "FAIL"]
    assert failures == ["interrupted", "interrupted"]  # one per stop
    # finished trials were kept as they were; none was run twice or lost
    for number, value in kept.items():
        assert study.trials[number].value == value
    numbers = [r["number"] for r in results(out)]
    assert sorted(numbers) == sorted(set(numbers)) == list(range(len(study.trials)))
    seeds = [t.user_attrs["seed"] for t in study.trials]
    assert len(set(seeds)) == len(seeds)
    lrs = [t.params["lr"] for t in study.trials if t.state.name == "COMPLETE"]
    assert len(set(lrs)) == len(lrs)


def test_changed_options_refuse_to_resume_the_study(tmp_path, capsys):
    out = tmp_path / "sweep"
    base = ["sweep", "--out", str(out), "--trials", "1", "--workers", "0", *TINY]
    cli.main(base)
    line = refusal(base + ["--epochs", "3"], capsys)
    assert re.search("was created with other options .*epochs", line)


# ---------------------------------------------------------------- repeat
def test_repeat_reports_mean_and_spread_over_seeds(tmp_path, capsys):
    out = tmp_path / "repeat"
    assert (
        cli.main(
            [
                "repeat",
                "--out",
                str(out),
                "--seeds",
                "3",
                "--workers",
                "0",
                "--dataset",
                "digits",
                "--digits-size",
                "8",
                "--epochs",
                "2",
                "--param",
                "lr=0.05",
                "--param",
                "hidden_layers=3",
            ]
        )
        == 0
    )
    assert "3/3 seeds completed" in capsys.readouterr().out
    record = json.loads((out / "repeat.json").read_text())
    assert [r["seed"] for r in record["runs"]] == [0, 1, 2]
    summary = record["summary"]
    assert len(summary["val_acc"]["mean"]) == 2 and summary["final_val_acc"]["std"] > 0
    assert (out / "repeat.png").read_bytes()[:4] == b"\x89PNG"


def test_repeat_refuses_ranges(tmp_path, capsys):
    argv = ["repeat", "--out", str(tmp_path / "out"), "--param", "lr=log:1e-3:1e-1"]
    assert "repeat takes fixed values only; lr" in refusal(argv, capsys)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- layering
def test_nothing_in_the_sweep_imports_the_nntrain_command_line():
    # nntrain.cli imports the sweep; the sweep takes what both need from nntrain.catalog
    import ast

    for path in sorted((SRC / "nntrain" / "sweep").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.level:
                    package = ["nntrain", "sweep"][: 3 - node.level]
                    names = [".".join(package + ([node.module] if node.module else []))]
                    names += [f"{names[0]}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert "nntrain.cli" not in names, f"{path.name}:{node.lineno} imports nntrain.cli"
