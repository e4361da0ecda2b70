"""Command line: ``nntrain`` / ``python -m nntrain``.

Quick start (scikit-learn's 8x8 digits, SimpleConvNet, about a minute on 2 cores)::

    python -m nntrain

Fashion-MNIST from Debian's ``dataset-fashion-mnist``, the book's DeepConvNet::

    python -m nntrain --dataset fashion-mnist --model deep --epochs 5 --out runs/deep

Hyperparameter search and multi-seed runs on Dask (``pip install 'nnkernels[sweep]'``)::

    python -m nntrain sweep --preset book --dataset fashion-mnist
    python -m nntrain repeat --param lr=0.01 --seeds 10

Time identical training steps with the pure-NumPy reference layers and with nnlayers::

    python -m nntrain --compare-reference
"""

import argparse
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from ._io import LoadError, display_name, printable
from ._layers import layers_name, resolve_layers
from .catalog import DATASETS, MODELS, build_network, load_dataset
from .command import (
    CommandParser,
    OutputError,
    check_learning_rate,
    check_output_directory,
    check_output_file,
    check_positive,
    compile_notice,
    create_directory,
    fail,
    writing,
)
from .optimizers import OPTIMIZERS, make_optimizer
from .trainer import Trainer

#: epochs when --epochs is not given: the quick start on digits vs the book's 20
DEFAULT_EPOCHS = {"digits": 30, "fashion-mnist": 20, "mnist-dir": 20}
#: step size when --lr is not given (the optimizer's own default otherwise)
DIGITS_ADAM_LR = 0.01
#: what a run writes into --out, in this order (the parameters first)
OUTPUT_FILES = ("params.pkl", "history.json", "learning_curves.png")


def build_parser():
    parser = CommandParser(
        prog="nntrain",
        description="Train the 'Deep Learning from Scratch' networks on nnlayers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="simple",
        help="SimpleConvNet, DeepConvNet or a 2x100 MultiLayerNet",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits: scikit-learn's 8x8 digits (no download); fashion-mnist: "
        "Debian's dataset-fashion-mnist or --data-dir; mnist-dir: IDX "
        "files in --data-dir (or $NNTRAIN_MNIST_DIR)",
    )
    parser.add_argument("--data-dir", help="directory with the four MNIST-format IDX files")
    parser.add_argument(
        "--digits-size",
        type=int,
        choices=(8, 28),
        default=28,
        help="digits as 28x28 MNIST-like frames (the book's networks unchanged) or the native 8x8",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"default: {DEFAULT_EPOCHS['digits']} on digits, 20 otherwise; 0 only with "
        "--compare-reference (time the steps without training)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--optimizer", type=str.lower, choices=sorted(OPTIMIZERS), default="adam")
    parser.add_argument(
        "--lr",
        type=float,
        help=f"learning rate (default: {DIGITS_ADAM_LR} for adam on digits, "
        "else the optimizer's default)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds weight init, batch sampling and dropout"
    )
    parser.add_argument("--threads", type=int, help="threads for nnlayers' kernels")
    parser.add_argument(
        "--layers",
        choices=("nnlayers", "reference"),
        default="nnlayers",
        help="layer implementation to train with",
    )
    parser.add_argument(
        "--eval-samples", type=int, help="evaluate accuracies on the first N samples each epoch"
    )
    parser.add_argument(
        "--out",
        help="output directory: params.pkl, history.json, learning_curves.png (checked "
        "before training; if writing fails at the end, the files go to a new "
        "nntrain-run-* directory here, or in the temporary directory, and the error names it)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="save a training checkpoint here after every epoch (a .npz "
        "path: a NumPy archive, no pickle)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint if it exists (same data and options); "
        "a pickled checkpoint may hold only plain data and arrays",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="resume with plain pickle, which runs any code the file names: "
        "only for a checkpoint you trust",
    )
    parser.add_argument(
        "--compare-reference",
        action="store_true",
        help="after training (if --epochs > 0), time identical steps with "
        "nnlayers.reference and nnlayers and print the speedup",
    )
    parser.add_argument(
        "--compare-steps",
        type=int,
        default=20,
        help="timed steps per implementation for --compare-reference",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or epoch lines: one line at the end, the final test accuracy "
        "and where the files went",
    )
    return parser


# ---------------------------------------------------------------- pieces
def warm_up(model, input_shape, layers, dtype, x, t, batch_size):
    """Run a training step's forward/backward and an evaluation forward, at the real batch
    size, on a throw-away network, so that JIT compilation (or loading the compiled kernels
    from cache) is not counted in the first epoch. Returns seconds."""
    start = time.perf_counter()
    scratch = build_network(
        model, input_shape, layers=layers, dtype=dtype, rng=np.random.default_rng(0)
    )
    state = np.random.get_state()
    scratch.gradient(x[:batch_size], t[:batch_size])
    scratch.accuracy(x[:batch_size], t[:batch_size])
    np.random.set_state(state)
    return time.perf_counter() - start


def set_threads(n):
    """Apply ``--threads`` through ``nnlayers.set_num_threads`` when it exists."""
    import nnlayers

    setter = getattr(nnlayers, "set_num_threads", None)
    if setter is None:
        print(
            "nntrain: warning: nnlayers.set_num_threads is not available; --threads ignored",
            file=sys.stderr,
        )
        return False
    try:
        setter(n)
    except ValueError as exc:
        fail(f"--threads {n}: {exc}")
    return True


def _seeds(seed):
    init_seq, batch_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(batch_seq)


def _optimizer_params(args):
    if args.lr is not None:
        return {"lr": args.lr}
    if args.dataset == "digits" and args.optimizer == "adam":
        return {"lr": DIGITS_ADAM_LR}
    return {}


def plot_curves(trainer, path):
    """Write the loss and accuracy curves of ``trainer`` to the PNG ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'nnkernels[train]'") from None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(trainer.train_loss_list) + 1) / trainer.iter_per_epoch
    ax_loss.plot(steps, trainer.train_loss_list, lw=0.8)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (per step)")
    ax_loss.set_yscale("log")
    epochs = np.arange(1, len(trainer.train_acc_list) + 1)
    ax_acc.plot(epochs, trainer.train_acc_list, marker="o", label="train")
    ax_acc.plot(epochs, trainer.test_acc_list, marker="s", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out_dir, trainer, network, config, final_test_acc, written=None):
    """Write :data:`OUTPUT_FILES` into the existing directory ``out_dir``, in that order,
    each atomically, appending each name to the list ``written`` once it is complete.

    Raises
    ------
    OutputError
        A file could not be written; it names the file.
    """
    written = [] if written is None else written
    params, history, curves = (os.path.join(out_dir, name) for name in OUTPUT_FILES)
    with writing(params):
        network.save_params(params)
    written.append(OUTPUT_FILES[0])
    record = {"config": config, "final_test_acc": final_test_acc, **trainer.history()}
    tmp = os.path.join(out_dir, ".history.json.tmp")
    with writing(history):
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, history)
    written.append(OUTPUT_FILES[1])
    with writing(curves):
        plot_curves(trainer, curves)
    written.append(OUTPUT_FILES[2])
    return written


def write_elsewhere(trainer, network, config, final_test_acc):
    """Write the run's files into a new ``nntrain-run-*`` directory in the current
    directory or, failing that, in the system's temporary directory. Returns the path of
    its ``params.pkl``, or ``None`` when the parameters could be written nowhere."""
    for parent in dict.fromkeys((os.getcwd(), tempfile.gettempdir())):
        try:
            directory = tempfile.mkdtemp(prefix="nntrain-run-", dir=parent)
        except OSError:
            continue
        written = []
        try:
            write_outputs(directory, trainer, network, config, final_test_acc, written)
        except OutputError:
            if not written:
                continue
        return os.path.join(directory, OUTPUT_FILES[0])
    return None


def rescue(error, trainer, network, config, final_test_acc):
    """Stop after the :class:`OutputError` ``error`` with one line naming the file that
    failed and where the parameters went instead (:func:`write_elsewhere`); exit status 1."""
    rescued = write_elsewhere(trainer, network, config, final_test_acc)
    if rescued:
        fail(f"{error}; the trained parameters are in {rescued}", status=1)
    fail(f"{error}; the parameters could not be written anywhere else either", status=1)


# ---------------------------------------------------------------- compare
def compare_reference(args, x_train, t_train, input_shape, dtype, out=None):
    """Time ``args.compare_steps`` identical training steps per implementation, interleaved.

    Both networks start from the same weights and see the same batches (and dropout masks);
    returns a dict with the per-step times, their medians and the speedup.
    """
    import nnlayers.reference as reference

    fast = resolve_layers("nnlayers")
    out = sys.stdout if out is None else out
    nets, opts = {}, {}
    for name, module in (("reference", reference), ("nnlayers", fast)):
        init_rng, _ = _seeds(args.seed)
        nets[name] = build_network(
            args.model, input_shape, layers=module, dtype=dtype, rng=init_rng
        )
        opts[name] = make_optimizer(args.optimizer, **_optimizer_params(args))
    _, batch_rng = _seeds(args.seed)
    warmup = 2
    total = warmup + args.compare_steps
    batches = [batch_rng.integers(0, len(x_train), size=args.batch_size) for _ in range(total)]
    times = {name: [] for name in nets}
    for step, mask in enumerate(batches):
        x_batch, t_batch = x_train[mask], t_train[mask]
        order = ("reference", "nnlayers") if step % 2 == 0 else ("nnlayers", "reference")
        for name in order:
            np.random.seed(args.seed + step)  # identical dropout masks
            start = time.perf_counter()
            grads = nets[name].gradient(x_batch, t_batch)
            opts[name].update(nets[name].params, grads)
            elapsed = time.perf_counter() - start
            if step >= warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(v) for name, v in times.items()}
    speedup = medians["reference"] / medians["nnlayers"]
    max_diff = max(
        float(np.max(np.abs(nets["reference"].params[k] - nets["nnlayers"].params[k])))
        for k in nets["reference"].params
    )
    print(
        f"{args.model} on {args.dataset}, batch {args.batch_size}, {args.dtype}, "
        f"{args.compare_steps} timed steps after {warmup} warm-up steps (interleaved)",
        file=out,
    )
    print(f"  nnlayers.reference  median step {1000 * medians['reference']:8.2f} ms", file=out)
    print(f"  {layers_name(fast):<19} median step {1000 * medians['nnlayers']:8.2f} ms", file=out)
    print(
        f"  speedup {speedup:.2f}x   max |param difference| after {total} steps {max_diff:.3g}",
        file=out,
    )
    return {"times": times, "medians": medians, "speedup": speedup, "max_param_diff": max_diff}


class CheckedTrainer(Trainer):
    """A :class:`Trainer` whose failed checkpoint write raises :class:`OutputError`."""

    def save_checkpoint(self, path):
        with writing(path):
            super().save_checkpoint(path)


# ---------------------------------------------------------------- main
def check_args(args):
    """Refuse what cannot work, before anything starts; returns the number of epochs.

    Every refusal is one line on stderr and exit status 2 (:func:`fail`), and writes
    nothing: output paths are checked here and created only when training starts.
    """
    check_positive(args, ("batch_size", "compare_steps", "threads", "eval_samples"))
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.dataset]
    if epochs < 0:
        fail(f"--epochs must be positive, got {epochs}")
    if epochs == 0 and not args.compare_reference:
        fail(
            "--epochs 0 trains nothing: give 1 or more (0 goes with --compare-reference, "
            "to time the steps without training)"
        )
    if epochs == 0 and (args.out or args.checkpoint):
        option = "--out" if args.out else "--checkpoint"
        fail(f"--epochs 0 trains nothing, so {option} would stay empty: leave it out")
    check_learning_rate(args.lr)
    if args.dataset == "mnist-dir" and not (args.data_dir or os.environ.get("NNTRAIN_MNIST_DIR")):
        fail("--dataset mnist-dir needs --data-dir (or $NNTRAIN_MNIST_DIR)")
    if args.dataset == "digits" and args.data_dir:
        fail("--data-dir does not apply to --dataset digits")
    if args.resume and not args.checkpoint:
        fail("--resume needs --checkpoint")
    if args.trust_pickle and not args.resume:
        fail("--trust-pickle applies to --resume only")
    if args.out:
        check_output_directory(args.out, "--out", OUTPUT_FILES)
        if importlib.util.find_spec("matplotlib") is None:
            fail("--out: learning_curves.png needs matplotlib: pip install 'nnkernels[train]'")
    if args.checkpoint:
        check_output_file(args.checkpoint, "--checkpoint")
    if not args.quiet and epochs > 0 and importlib.util.find_spec("tqdm") is None:
        fail("the progress bar needs tqdm: pip install 'nnkernels[train]' (or give --quiet)")
    return epochs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("sweep", "repeat"):  # nntrain sweep / repeat: nntrain.sweep
        from .sweep.cli import main as sweep_main

        return sweep_main(argv)
    args = build_parser().parse_args(argv)
    epochs = check_args(args)
    if args.threads is not None:
        set_threads(args.threads)
    dtype = np.dtype(args.dtype)

    try:
        (x_train, t_train), (x_test, t_test) = load_dataset(
            args.dataset, args.data_dir, flatten=False, digits_size=args.digits_size
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    input_shape = x_train.shape[1:]

    outcome = []  # the parts of --quiet's one line
    if epochs > 0:
        try:
            outcome.append(
                train(args, epochs, dtype, x_train, t_train, x_test, t_test, input_shape)
            )
        except LoadError as exc:  # one line, whatever the file's name or content
            print(f"nntrain: error: {printable(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
    if args.compare_reference:
        if not args.quiet:
            print("\ntiming the same training steps with the reference layers ...", flush=True)
        out = io.StringIO() if args.quiet else None
        timing = compare_reference(args, x_train, t_train, input_shape, dtype, out=out)
        outcome.append(f"speedup {timing['speedup']:.2f}x over nnlayers.reference")
    if args.quiet:
        print("; ".join(outcome), flush=True)
    return 0


def train(args, epochs, dtype, x_train, t_train, x_test, t_test, input_shape):
    """Train as the options say; print per-epoch lines and write ``--out`` files.

    Returns the run's outcome in words (final test accuracy, where the files went).
    """
    layers = resolve_layers(args.layers)
    with compile_notice(enabled=not args.quiet):
        warmup = warm_up(args.model, input_shape, layers, dtype, x_train, t_train, args.batch_size)
    init_rng, batch_rng = _seeds(args.seed)
    np.random.seed(args.seed)  # the layers' Dropout draws from the global generator
    network = build_network(args.model, input_shape, layers=layers, dtype=dtype, rng=init_rng)
    optimizer_param = _optimizer_params(args)
    if not args.quiet:
        print(
            f"{type(network).__name__} ({layers_name(layers)}, {args.dtype}) on "
            f"{args.dataset}: {len(x_train)} train / {len(x_test)} test images "
            f"{tuple(input_shape)}, {epochs} epochs, batch {args.batch_size}, "
            f"{args.optimizer} {optimizer_param or '(defaults)'}; "
            f"warm-up (JIT compile or cache load) {warmup:.1f}s",
            flush=True,
        )
    trainer = CheckedTrainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=epochs,
        mini_batch_size=args.batch_size,
        optimizer=args.optimizer,
        optimizer_param=optimizer_param,
        evaluate_sample_num_per_epoch=args.eval_samples,
        quiet=args.quiet,
        rng=batch_rng,
        checkpoint_path=args.checkpoint,
        resume=args.resume,
        trusted=args.trust_pickle,
    )
    if trainer.current_epoch and not args.quiet:
        print(f"resumed from {display_name(args.checkpoint)} after epoch {trainer.current_epoch}")
    if args.out:
        create_directory(args.out, "--out")
    if args.checkpoint:
        create_directory(os.path.dirname(args.checkpoint) or ".", "--checkpoint")
    config = {k: v for k, v in vars(args).items()}
    config.update(epochs=epochs, optimizer_param=optimizer_param, layers=layers_name(layers))
    start = time.perf_counter()
    try:
        final_test_acc = trainer.train()
    except OutputError as exc:
        stopped = OutputError(
            exc.path, f"{exc.reason}; training stopped after epoch {trainer.current_epoch}"
        )
        rescue(stopped, trainer, network, config, None)
    wall = time.perf_counter() - start
    config.update(wall_time=wall)
    if not args.quiet:
        print(f"trained in {wall:.1f}s ({sum(trainer.epoch_times):.1f}s in training steps)")
    outcome = f"final test acc {final_test_acc:.4f}"
    if args.checkpoint:
        outcome += f"; checkpoint {args.checkpoint}"
    if not args.out:
        return outcome + "; no --out, no files written"
    try:
        write_outputs(args.out, trainer, network, config, final_test_acc)
    except OutputError as exc:
        rescue(exc, trainer, network, config, final_test_acc)
    wrote = f"wrote {', '.join(OUTPUT_FILES)} to {display_name(args.out)}"
    if not args.quiet:
        print(wrote)
    return f"{outcome}; {wrote}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
