"""``nntrain repeat``: one configuration over several seeds, mean and spread of the curves."""

import os
import sys

import numpy as np

from .._io import display_name
from ..command import writing
from . import require
from .cluster import SlowWorkerNotice
from .report import save_json
from .runner import ResultsFile
from .trial import run_trial

#: every file ``nntrain repeat`` writes into --out
REPEAT_FILES = ("repeat.json", "repeat.jsonl", "repeat.png")


def summarise(runs):
    """Mean, standard deviation, min and max per epoch and of the final accuracies.

    Only runs that completed enter the statistics; the others are listed with reasons.
    """
    done = [r for r in runs if r["status"] == "complete"]
    summary = {
        "runs": len(runs),
        "completed": len(done),
        "failed": [
            {"seed": r["seed"], "status": r["status"], "reason": r["reason"]}
            for r in runs
            if r["status"] != "complete"
        ],
    }
    if not done:
        return summary
    for key in ("val_acc", "train_acc", "epoch_loss"):
        curves = np.array([r[key] for r in done], dtype=float)
        summary[key] = {"mean": curves.mean(axis=0).tolist(), "std": curves.std(axis=0).tolist()}
    for key, values in (
        ("final_val_acc", [r["val_acc"][-1] for r in done]),
        ("test_acc", [r["test_acc"] for r in done]),
    ):
        values = np.array(values, dtype=float)
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return summary


def plot_repeat(summary, path):
    """Mean +- one standard deviation of the accuracy and loss curves."""
    from .report import _pyplot

    plt = _pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(summary["val_acc"]["mean"]) + 1)
    for key, label, ax in (
        ("val_acc", "validation", ax_acc),
        ("train_acc", "train", ax_acc),
        ("epoch_loss", "training loss", ax_loss),
    ):
        mean, std = np.array(summary[key]["mean"]), np.array(summary[key]["std"])
        ax.plot(epochs, mean, label=label)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.25)
    ax_acc.set_ylabel("accuracy")
    ax_loss.set_ylabel("mean training loss per epoch")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.legend()
    ax_acc.set_title(
        f"{summary['completed']} seeds: final validation "
        f"{summary['final_val_acc']['mean']:.4f} ± "
        f"{summary['final_val_acc']['std']:.4f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def repeat(executor, config, params, seeds, out_dir, threads=1, quiet=False):
    """Train ``params`` once per seed on ``executor``; write repeat.json/.png/.jsonl."""
    tqdm = require("tqdm").tqdm
    results = ResultsFile(os.path.join(out_dir, "repeat.jsonl"))
    pending = {
        executor.submit(run_trial, config, params, seed, None, threads): seed for seed in seeds
    }
    runs = []
    slow_worker = SlowWorkerNotice()
    with tqdm(total=len(pending), unit="run", desc="seeds", disable=quiet) as bar:
        while pending:
            for future in executor.wait_first(list(pending), timeout=2.0):
                seed = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:
                    result = {
                        "seed": seed,
                        "params": params,
                        "status": "lost",
                        "reason": f"lost: {type(exc).__name__}: {exc}",
                    }
                runs.append(result)
                results.append(
                    seed, result["status"], (result.get("val_acc") or [None])[-1], result
                )
                slow_worker.check(result, lambda message: bar.write(message, file=sys.stderr))
                bar.update(1)
    runs.sort(key=lambda r: r["seed"])
    summary = summarise(runs)
    record = {
        "config": config,
        "params": params,
        "summary": summary,
        "runs": [
            {
                k: r.get(k)
                for k in (
                    "seed",
                    "status",
                    "reason",
                    "val_acc",
                    "train_acc",
                    "epoch_loss",
                    "test_acc",
                    "seconds",
                    "worker",
                )
            }
            for r in runs
        ],
    }
    json_path, _, png_path = (os.path.join(out_dir, name) for name in REPEAT_FILES)
    with writing(json_path):
        save_json(record, json_path)
    written = list(REPEAT_FILES[:2])
    if summary["completed"]:
        with writing(png_path):
            plot_repeat(summary, png_path)
        written.append(REPEAT_FILES[2])
    outcome = f"{summary['completed']}/{summary['runs']} seeds completed"
    if summary["completed"]:
        val, test = summary["final_val_acc"], summary["test_acc"]
        outcome += (
            f": validation {val['mean']:.4f} ± {val['std']:.4f} (min {val['min']:.4f}, max "
            f"{val['max']:.4f}); test {test['mean']:.4f} ± {test['std']:.4f}"
        )
    wrote = f"wrote {', '.join(written)} to {display_name(out_dir)}"
    if quiet:
        print(f"{outcome}; {wrote}", flush=True)
        return summary
    print(outcome)
    for failure in summary["failed"]:
        print(f"seed {failure['seed']}: {failure['status']}: {failure['reason']}")
    print(wrote)
    return summary
