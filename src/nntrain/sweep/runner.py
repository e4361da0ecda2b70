"""The client side of a sweep: the Optuna study, the ask/submit/tell loop, resume."""

import json
import math
import os
import signal
import statistics
import sys
import threading
import time

import numpy as np

from ..command import fail, writing
from . import require
from .cluster import SlowWorkerNotice
from .report import ranked
from .trial import run_trial

#: the median pruner's startup trials (as Optuna's ``MedianPruner`` default)
PRUNER_STARTUP_TRIALS = 5
#: failures that are the trial's own outcome and count towards ``--trials``
OWN_FAILURES = ("error", "diverged")
CONFIG_ATTR = "nntrain_sweep_config"


class SweepAborted(RuntimeError):
    """Too many trials lost on the cluster (e.g. workers that cannot import nntrain), or
    the best trial gave other curves when re-run to save its network."""


def trial_seed(base_seed, number):
    """The seed of trial ``number``: distinct per trial, reproducible from ``--seed``."""
    return int(np.random.SeedSequence([base_seed, number]).generate_state(1)[0])


def make_sampler(name, seed, trials_so_far):
    """``random`` (as the book) or ``tpe``, seeded so that a resumed study draws anew."""
    optuna = require("optuna")
    seed = trial_seed(seed, 1_000_000 + trials_so_far)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(storage, study_name, config):
    """Create the study or load it to continue; refuse one made with other options (one
    line, exit status 2)."""
    optuna = require("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize", load_if_exists=True
        )
    except Exception as exc:  # SQLAlchemy's and Optuna's errors have no common base
        fail(f"--storage {storage}: cannot open the study ({type(exc).__name__}: {exc})")
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, config)
    elif stored != json.loads(json.dumps(config)):
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        fail(
            f"study {study_name!r} in {storage} was created with other "
            f"options ({', '.join(changed)} differ); use the same options to resume it or "
            "pass --study-name NAME for a new study"
        )
    return study


def is_finished(frozen):
    """Whether a stored trial counts towards ``--trials``."""
    state = frozen.state.name
    if state in ("COMPLETE", "PRUNED"):
        return True
    return state == "FAIL" and frozen.user_attrs.get("failure") in OWN_FAILURES


def median_thresholds(study, epochs):
    """Per-epoch medians of the finished trials' validation accuracy (``None`` before
    ``PRUNER_STARTUP_TRIALS`` trials completed)."""
    optuna = require("optuna")
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < PRUNER_STARTUP_TRIALS:
        return None
    curves = [t.user_attrs.get("val_acc", []) for t in done]
    thresholds = []
    for step in range(epochs):
        values = [curve[step] for curve in curves if step < len(curve)]
        thresholds.append(statistics.median(values) if values else None)
    return thresholds


#: what a trial's result adds to its Optuna user attributes (``seed`` and ``all_params``
#: are set when it is asked for; ``results.jsonl`` has every field). Each attribute is
#: an SQLite transaction in the client, which shares the cores with the workers.
STUDY_ATTRS = (
    "train_acc",
    "val_acc",
    "epoch_loss",
    "test_acc",
    "seconds",
    "worker",
    "reason",
    "traceback",
)


def _attrs(result):
    return {k: result.get(k) for k in STUDY_ATTRS if result.get(k) is not None}


class InterruptGuard:
    """Holds Ctrl-C back while the study is written.

    Once installed (in the main thread, where SIGINT raises ``KeyboardInterrupt``), a
    SIGINT inside a ``with guard:`` block raises ``KeyboardInterrupt`` when the outermost
    block ends, and elsewhere at once. An interrupt in the middle of a storage call can
    leave its database session open and the SQLite file locked; the trials in flight could
    then not be told ``FAIL``.
    """

    def __init__(self):
        self.depth, self.pending, self.previous = 0, False, None

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handle(self, signum, frame):
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self):
        self.depth += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            if exc_type is None:
                raise KeyboardInterrupt


class Sweep:
    """Run trials of ``study`` until ``trials`` of them are finished.

    Opening it tells the trials a stopped client left running ``FAIL`` (interrupted) and
    adds the finished trials the results file lacks; :meth:`run` then runs the rest on an
    executor (``InProcessExecutor`` or ``DaskExecutor``).

    Parameters
    ----------
    study : optuna.Study
    space : SearchSpace
    trial_config : dict
        Passed to every ``run_trial``.
    results : ResultsFile
    best_saver : BestNetworkSaver
        Called as ``best_saver(trial_number, result)`` when a trial beats the best so far
        (to save its network); ``best_saver.saved(study)`` tells whether it is saved.
    """

    def __init__(
        self,
        study,
        space,
        trial_config,
        *,
        trials,
        seed,
        sampler,
        pruner,
        results,
        best_saver,
        threads=1,
        quiet=False,
    ):
        self.study, self.space, self.executor = study, space, None
        self.trial_config = trial_config
        self.trials, self.seed, self.pruner = trials, seed, pruner
        self.results, self.best_saver = results, best_saver
        self.threads, self.quiet = threads, quiet
        self.pending = {}  # future -> trial number
        self.asked = {}  # trial number -> (trial, params, seed, submitted) until told
        self.lost = 0
        self.slow_worker = SlowWorkerNotice()
        self.guard = InterruptGuard()
        self.mark_interrupted()
        self.backfill_results()
        stored = study.get_trials(deepcopy=False)
        study.sampler = make_sampler(sampler, seed, len(stored))
        self.finished = sum(is_finished(t) for t in stored)
        complete = [t.value for t in stored if t.state.name == "COMPLETE"]
        self.best = max(complete) if complete else -math.inf

    def mark_interrupted(self):
        """Trials a dead client left running: ``FAIL`` with failure ``interrupted``."""
        optuna = require("optuna")
        running = self.study.get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING),
        )
        for frozen in running:
            reason = "interrupted: the client stopped while the trial ran"
            storage = self.study._storage
            storage.set_trial_user_attr(frozen._trial_id, "failure", "interrupted")
            storage.set_trial_user_attr(
                frozen._trial_id, "seed", trial_seed(self.seed, frozen.number)
            )
            storage.set_trial_user_attr(frozen._trial_id, "reason", reason)
            self.study.tell(
                frozen.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True
            )

    def backfill_results(self):
        """Append the finished trials the results file lacks (told just before a crash)."""
        recorded = self.results.numbers()
        for frozen in self.study.get_trials(deepcopy=False):
            if frozen.number in recorded or not frozen.state.is_finished():
                continue
            status = frozen.user_attrs.get("failure", frozen.state.name.lower())
            self.results.append(
                frozen.number,
                frozen.state.name,
                frozen.value,
                {"params": frozen.params, "status": status, **frozen.user_attrs},
            )

    @property
    def complete(self):
        """Whether ``trials`` trials are finished."""
        return self.finished >= self.trials

    def run(self, executor):
        """Ask, submit to ``executor`` and tell until ``trials`` trials are finished.

        Returns the study. A file that cannot be written raises
        :class:`~nntrain.command.OutputError` after the trials in flight are told
        ``FAIL`` (interrupted), as for Ctrl-C.
        """
        self.executor = executor
        tqdm = require("tqdm").tqdm
        bar = tqdm(
            total=self.trials,
            initial=min(self.finished, self.trials),
            unit="trial",
            desc="trials",
            disable=self.quiet,
            dynamic_ncols=True,
        )
        self._show_best(bar)
        self.guard.install()
        try:
            while self.finished + len(self.pending) < self.trials or self.pending:
                self._fill()
                for future in self.executor.wait_first(list(self.pending), timeout=2.0):
                    with self.guard:
                        self._collect(future, bar)
        except BaseException:
            with self.guard:
                self._abandon()
            raise
        finally:
            self.guard.restore()
            bar.close()
        return self.study

    def save_best_network(self, executor):
        """Train the best trial again on ``executor`` and save its network, when the saved
        one is missing or another's (a write failed in an earlier run). A trial's curves
        depend only on its parameters and seed, so this is the same network.

        Returns the number of the trial trained again, or ``None`` when none had to be.
        """
        if self.best_saver.saved(self.study) is not None:
            return None
        best = ranked(self.study)[0]
        attrs = best.user_attrs
        future = executor.submit(
            run_trial,
            self.trial_config,
            attrs["all_params"],
            attrs["seed"],
            None,
            self.threads,
            return_params=True,
        )
        result = future.result()
        if result["status"] != "complete" or result["val_acc"] != attrs.get("val_acc"):
            raise SweepAborted(
                f"trial {best.number}, trained again to save its network, ended "
                f"{result['status']} with validation accuracy {result['val_acc']} instead of "
                f"{attrs.get('val_acc')}"
            )
        self.best_saver(best.number, result)
        return best.number

    def _fill(self):
        slots = self.executor.slots() + self.executor.prefetch()
        while self.finished + len(self.pending) < self.trials and len(self.pending) < slots:
            with self.guard:
                trial = self.study.ask()
                seed = trial_seed(self.seed, trial.number)
                self.asked[trial.number] = (trial, {}, seed, time.time())
                params = self.space.suggest(trial)
                self.asked[trial.number] = (trial, params, seed, time.time())
                trial.set_user_attr("seed", seed)
                trial.set_user_attr("all_params", params)  # trial.params lacks the fixed ones
                thresholds = (
                    median_thresholds(self.study, self.trial_config["epochs"])
                    if self.pruner == "median"
                    else None
                )
            # --workers 0 runs the trial now, in this thread: Ctrl-C stops it at once
            future = self.executor.submit(
                run_trial,
                self.trial_config,
                params,
                seed,
                thresholds,
                self.threads,
                return_params=True,
            )
            self.pending[future] = trial.number

    def _collect(self, future, bar):
        trial, params, seed, submitted = self.asked[self.pending.pop(future)]
        try:
            result = future.result()
        except Exception as exc:  # the task never finished: worker killed, cluster gone
            self.lost += 1
            if self.lost > max(10, self.trials):
                raise SweepAborted(
                    f"{self.lost} trials lost on the cluster, the last with "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            result = {
                "seed": seed,
                "params": params,
                "status": "lost",
                "reason": f"lost: {type(exc).__name__}: {exc}",
            }
        result["queued_seconds"] = max(0.0, time.time() - submitted - result.get("seconds", 0))
        arrays = result.pop("params_arrays", None)
        buffers = result.pop("buffers_arrays", None)
        state, value = self._tell(trial, result)
        self.results.append(trial.number, state, value, result)
        status = result["status"]
        if status == "complete" and value > self.best:
            self.best = value
            if arrays is not None:
                self.best_saver(
                    trial.number, {**result, "params_arrays": arrays, "buffers_arrays": buffers}
                )
        self._show_best(bar)
        if status in ("complete", "pruned") or status in OWN_FAILURES:
            self.finished += 1
            bar.update(1)
        if status in ("error", "lost") and not self.quiet:
            bar.write(f"trial {trial.number} failed: {result['reason']}")
        self.slow_worker.check(result, lambda message: bar.write(message, file=sys.stderr))

    def _tell(self, trial, result):
        """Record ``result`` in the study; returns ``(state name, value)``."""
        optuna = require("optuna")
        for key, value in _attrs(result).items():
            trial.set_user_attr(key, value)
        status = result["status"]
        state = optuna.trial.TrialState
        if status == "complete":
            self.study.tell(trial, result["val_acc"][-1])
        elif status == "pruned":
            self.study.tell(trial, state=state.PRUNED)
        else:
            trial.set_user_attr("failure", status)
            self.study.tell(trial, state=state.FAIL)
        del self.asked[trial.number]
        if status == "complete":
            return "COMPLETE", result["val_acc"][-1]
        return ("PRUNED", result["val_acc"][-1]) if status == "pruned" else ("FAIL", None)

    def _show_best(self, bar):
        if self.best > -math.inf:
            bar.set_postfix(best=f"{self.best:.4f}", refresh=False)

    def _abandon(self):
        """Ctrl-C or a crash of the loop: tell the trials in flight ``FAIL``/interrupted."""
        optuna = require("optuna")
        for future in self.pending:
            future.cancel()
        for trial, params, seed, _ in self.asked.values():
            reason = "interrupted: the sweep stopped while the trial ran"
            try:
                trial.set_user_attr("failure", "interrupted")
                trial.set_user_attr("seed", seed)
                trial.set_user_attr("reason", reason)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                self.results.append(
                    trial.number,
                    "FAIL",
                    None,
                    {"params": params, "seed": seed, "reason": reason, "failure": "interrupted"},
                )
            except Exception:  # the next run marks what is left RUNNING
                pass
        self.pending.clear()
        self.asked.clear()
        try:  # a trial asked but not yet tracked when the interrupt came
            self.mark_interrupted()
        except Exception:  # the next run marks it
            pass


class ResultsFile:
    """Results as JSON lines, appended and flushed as each trial finishes."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def numbers(self):
        """The trial numbers already in the file."""
        if not os.path.exists(self.path):
            return set()
        numbers = set()
        with open(self.path) as f:
            for line in f:
                try:
                    numbers.add(json.loads(line)["number"])
                except (ValueError, KeyError):  # a line cut short by a crash
                    continue
        return numbers

    def append(self, number, state, value, result):
        record = {
            "number": number,
            "state": state,
            "value": value,
            **{k: v for k, v in result.items() if k != "params_arrays"},
        }
        with writing(self.path), open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
