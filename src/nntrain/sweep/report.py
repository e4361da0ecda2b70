"""What a sweep leaves behind: the best trials as a table, the PNGs, the best network."""

import json
import math
import os

import numpy as np

from .._io import save_file
from ..command import writing
from .trial import build_network

#: how many trials the book's figure shows (chapter 6 plots the best 20)
BOOK_FIGURE_TRIALS = 20
#: the best trial's network, its batch-norm statistics and its options
BEST_FILES = ("best_params.pkl", "best_buffers.pkl", "best_trial.json")
#: the figures of :func:`write_report`
FIGURES = ("best_curves.png", "lr_weight_decay.png", "history.png")
#: every file a sweep writes into --out (its study too, unless --storage says otherwise)
SWEEP_FILES = ("study.sqlite3", "results.jsonl", "summary.json", *FIGURES, *BEST_FILES)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'nnkernels[sweep]'") from None
    return plt


def ranked(study):
    """Completed trials, best validation accuracy first (ties: lower trial number)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return sorted(done, key=lambda t: (-t.value, t.number))


def _format_param(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def best_table(study, top=10):
    """The best ``top`` trials as aligned text."""
    rows = [("trial", "val acc", "test acc", "seconds", "worker", "parameters")]
    for t in ranked(study)[:top]:
        attrs = t.user_attrs
        test = attrs.get("test_acc")
        rows.append(
            (
                str(t.number),
                f"{t.value:.4f}",
                "-" if test is None else f"{test:.4f}",
                f"{attrs.get('seconds', float('nan')):.1f}",
                str(attrs.get("worker", "-")),
                " ".join(f"{k}={_format_param(v)}" for k, v in t.params.items()),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )


def state_counts(study):
    counts = {}
    for t in study.get_trials(deepcopy=False):
        label = t.state.name
        if label == "FAIL":
            label += f" ({t.user_attrs.get('failure', 'error')})"
        counts[label] = counts.get(label, 0) + 1
    return counts


def plot_book_figure(study, path, top=BOOK_FIGURE_TRIALS):
    """Chapter 6's figure: validation (solid) and training (dashed) accuracy per epoch of
    the best ``top`` trials, titled ``Best-k``."""
    plt = _pyplot()
    best = ranked(study)[:top]
    cols = 5
    rows = max(1, math.ceil(len(best) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for rank, (t, ax) in enumerate(zip(best, axes.flat, strict=False), start=1):
        ax.set_visible(True)
        val = t.user_attrs.get("val_acc", [])
        train = t.user_attrs.get("train_acc", [])
        epochs = np.arange(1, len(val) + 1)
        ax.plot(epochs, val, label="validation")
        ax.plot(epochs, train, "--", label="train")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"Best-{rank} (trial {t.number}): {t.value:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    if best:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_lr_weight_decay(study, path):
    """Learning rate x weight decay, coloured by validation accuracy (log axes)."""
    plt = _pyplot()
    points = []
    for t in ranked(study):
        params = t.user_attrs.get("all_params", t.params)
        points.append((params.get("lr"), params.get("weight_decay"), t.value))
    points = [p for p in points if p[0] is not None and p[1] is not None]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if points:
        lr, wd, acc = map(np.array, zip(*points, strict=True))
        scatter = ax.scatter(lr, wd, c=acc, cmap="viridis", edgecolors="k", linewidths=0.3)
        fig.colorbar(scatter, ax=ax, label="validation accuracy")
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(
            0.5,
            0.5,
            "lr and weight_decay were not both searched",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(study, path):
    """Optimisation history: each trial's validation accuracy and the best so far."""
    plt = _pyplot()
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    trials.sort(key=lambda t: t.number)
    fig, ax = plt.subplots(figsize=(7, 4))
    if trials:
        numbers = [t.number for t in trials]
        values = [t.value for t in trials]
        ax.scatter(numbers, values, s=12, label="trial")
        ax.step(
            numbers, np.maximum.accumulate(values), where="post", color="C3", label="best so far"
        )
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class BestNetworkSaver:
    """Save the best trial's network (``save_params``) and its options into ``out_dir``.

    Calling it writes ``best_params.pkl``, ``best_buffers.pkl`` (batch-norm running
    statistics, when the network has them) and ``best_trial.json`` last, each atomically;
    a file that cannot be written raises :class:`~nntrain.command.OutputError` naming it.
    """

    def __init__(self, out_dir, trial_config):
        self.out_dir, self.trial_config = out_dir, trial_config

    def _path(self, name):
        return os.path.join(self.out_dir, name)

    def __call__(self, number, result):
        merged = {**self.trial_config["defaults"], **result["params"]}
        arrays = result["params_arrays"]
        network = build_network(
            self.trial_config["model"],
            tuple(result["input_shape"]),
            merged,
            self.trial_config["data"]["dtype"],
            rng=0,
        )
        network.set_params(arrays, source=f"trial {number}")
        params, buffers, record_path = (self._path(name) for name in BEST_FILES)
        with writing(params):
            network.save_params(params)
        with writing(buffers):
            if result.get("buffers_arrays"):
                save_file(dict(result["buffers_arrays"]), buffers)
            elif os.path.exists(buffers):  # an earlier best trial's
                os.unlink(buffers)
        record = {
            "trial": number,
            "model": self.trial_config["model"],
            "params": merged,
            "seed": result["seed"],
            "val_acc": result["val_acc"][-1],
            "test_acc": result.get("test_acc"),
            "input_shape": result["input_shape"],
            "buffers": bool(result.get("buffers_arrays")),
        }
        with writing(record_path):
            save_json(record, record_path)

    def saved(self, study):
        """The names of the files holding the network of ``study``'s best trial (or of one
        as good), or ``None`` when they are missing or hold a worse trial's (a write
        failed). A study without a completed trial needs none: ``[]``."""
        best = ranked(study)
        if not best:
            return []
        params, buffers, record_path = (self._path(name) for name in BEST_FILES)
        try:
            with open(record_path) as f:
                record = json.load(f)
            saved = study.get_trials(deepcopy=False)[record["trial"]]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None
        if saved.state.name != "COMPLETE" or saved.value != best[0].value:
            return None
        names = list(BEST_FILES)
        if not record.get("buffers"):
            names.remove(BEST_FILES[1])
        if not all(os.path.isfile(self._path(name)) for name in names):
            return None
        return names


def save_json(obj, path):
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_report(study, out_dir):
    """Write ``summary.json`` and the :data:`FIGURES` into ``out_dir``.

    Returns ``(summary, names written)``; a file that cannot be written raises
    :class:`~nntrain.command.OutputError` naming it.
    """
    best = ranked(study)
    summary = {
        "counts": state_counts(study),
        "best": [
            {
                "trial": t.number,
                "val_acc": t.value,
                "test_acc": t.user_attrs.get("test_acc"),
                "params": t.user_attrs.get("all_params", t.params),
                "seed": t.user_attrs.get("seed"),
            }
            for t in best[:10]
        ],
    }
    path = os.path.join(out_dir, "summary.json")
    with writing(path):
        save_json(summary, path)
    plots = dict(zip(FIGURES, (plot_book_figure, plot_lr_weight_decay, plot_history)))
    for name, plot in plots.items():
        path = os.path.join(out_dir, name)
        with writing(path):
            plot(study, path)
    return summary, ["summary.json", *FIGURES]


def print_report(study, summary, out=None):
    """Print the best trials as a table and the count of trials per state."""
    print(best_table(study), file=out)
    print(
        "trials: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["counts"].items())),
        file=out,
    )
