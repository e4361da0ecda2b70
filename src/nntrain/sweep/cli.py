"""``nntrain sweep`` and ``nntrain repeat``: hyperparameter search and multi-seed runs.

A random search like the book's chapter 6 on 4 local worker processes... or on a cluster::

    nntrain sweep --preset book --dataset fashion-mnist --out runs/book
    nntrain sweep --param lr=log:1e-4:1e-1 --param optimizer=choice:sgd,adam \\
        --trials 50 --sampler tpe --pruner median --scheduler tcp://10.0.0.5:8786
    nntrain repeat --param lr=0.01 --seeds 10 --out runs/repeat

Re-running a sweep command continues its study (``--storage``, by default
``OUT/study.sqlite3``).
"""

import argparse
import os
import sys
import time

from ..catalog import DATASETS, MODELS
from ..optimizers import OPTIMIZERS
from .space import PARAMETERS, SearchSpace, SpaceError, load_toml, parse_param

#: chapter 6 of the book ("hyperparameter_optimization.py"), as option defaults and space
BOOK_PRESET = {
    "defaults": {
        "model": "mlp",
        "train_size": 500,
        "val_fraction": 0.2,
        "epochs": 50,
        "optimizer": "sgd",
        "batch_size": 100,
        "trials": 100,
        "sampler": "random",
    },
    "space": [
        "hidden_layers=6",
        "hidden_size=100",
        "lr=log:1e-6:1e-2",
        "weight_decay=log:1e-8:1e-4",
    ],
}
DEFAULT_EPOCHS = 5


def _add_common(parser):
    """Options shared by ``sweep`` and ``repeat`` (nntrain's names where they exist)."""
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="mlp",
        help="mlp: MultiLayerNetExtend (hidden sizes, dropout, batch norm "
        "searchable); simple/deep: the conv nets",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data-dir", help="directory with the four MNIST-format IDX files")
    parser.add_argument("--digits-size", type=int, choices=(8, 28), default=28)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=100, help="unless searched")
    parser.add_argument(
        "--optimizer",
        type=str.lower,
        choices=sorted(OPTIMIZERS),
        default="sgd",
        help="unless searched",
    )
    parser.add_argument("--lr", type=float, help="unless searched (default: the optimizer's)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the validation split, the sampler and every trial's seed",
    )
    parser.add_argument(
        "--train-size", type=int, help="use the first N training images (default: all)"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the training images held out for validation",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="searched or fixed parameter, e.g. lr=log:1e-6:1e-2, "
        "optimizer=choice:sgd,adam, hidden_layers=6; names: " + ", ".join(PARAMETERS),
    )
    parser.add_argument("--space", metavar="FILE", help="TOML file with a [space] table")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running Dask scheduler (tcp://HOST:PORT); default: a local cluster",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="local cluster: single-threaded worker processes (default: one "
        "per core); 0 runs the trials in this process",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per trial for the kernels and BLAS (trials running "
        "at once x threads must not exceed the cores)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for --scheduler"
    )
    parser.add_argument(
        "--local-cluster",
        choices=("processes", "threads"),
        default="processes",
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--quiet", action="store_true")


def build_parser(sweep_defaults=None):
    """The ``sweep``/``repeat`` parser; ``sweep_defaults`` replace the sweep's defaults
    (a preset's, so that explicit options still override them)."""
    parser = argparse.ArgumentParser(
        prog="nntrain",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser(
        "sweep",
        help="hyperparameter search with Optuna on Dask",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_common(sweep)
    sweep.add_argument(
        "--preset",
        choices=("book",),
        help="book: chapter 6 (6x100 MLP, 500 images, 20%% validation, 50 "
        "epochs, SGD, lr 10^U(-6,-2), weight decay 10^U(-8,-4), 100 "
        "random trials); explicit options override it",
    )
    sweep.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials wanted (lost or interrupted ones are replaced)",
    )
    sweep.add_argument("--sampler", choices=("random", "tpe"), default="tpe")
    sweep.add_argument(
        "--pruner",
        choices=("none", "median"),
        default="none",
        help="median: stop trials below the median validation curve",
    )
    sweep.add_argument(
        "--storage", metavar="URL", help="Optuna storage (default: sqlite:///OUT/study.sqlite3)"
    )
    sweep.add_argument("--study-name", default="nntrain-sweep")
    sweep.add_argument("--out", default="sweep", help="directory for results and figures")
    sweep.set_defaults(**(sweep_defaults or {}))
    repeat = commands.add_parser(
        "repeat",
        help="one configuration over several seeds",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_common(repeat)
    repeat.add_argument("--seeds", type=int, default=5, help="runs, seeds SEED..SEED+N-1")
    repeat.add_argument("--out", default="repeat", help="directory for repeat.json/.png")
    return parser


def parse_args(argv):
    args = build_parser().parse_args(argv)
    if getattr(args, "preset", None) == "book":
        args = build_parser(BOOK_PRESET["defaults"]).parse_args(argv)
    return args


def _fail(message):
    raise SystemExit(f"nntrain: {message}")


def build_space(args):
    """The search space: preset, then ``--space`` file, then ``--param`` entries."""
    space = SearchSpace()
    if getattr(args, "preset", None) == "book":
        space.update(parse_param(p, "--preset book") for p in BOOK_PRESET["space"])
    if args.space:
        space.update(load_toml(args.space))
    space.update(parse_param(p) for p in args.param)
    space.check_model(args.model)
    return space


def check_args(args):
    """Refuse impossible option values before anything starts (``SystemExit``)."""
    positive = ["epochs", "batch_size", "threads", "train_size"] + (
        ["trials"] if args.command == "sweep" else ["seeds"]
    )
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            _fail(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.workers is not None and args.workers < 0:
        _fail(f"--workers must be >= 0, got {args.workers}")
    if args.workers is not None and args.scheduler:
        _fail("--workers applies to the local cluster; not with --scheduler")
    if not 0 < args.val_fraction < 1:
        _fail(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.connect_timeout <= 0:
        _fail(f"--connect-timeout must be positive, got {args.connect_timeout}")
    if args.lr is not None and not args.lr > 0:
        _fail(f"--lr must be positive, got {args.lr}")
    if args.dataset == "mnist-dir" and not (args.data_dir or os.environ.get("NNTRAIN_MNIST_DIR")):
        _fail("--dataset mnist-dir needs --data-dir (or $NNTRAIN_MNIST_DIR)")
    if args.dataset == "digits" and args.data_dir:
        _fail("--data-dir does not apply to --dataset digits")


def _writable_directory(directory, option):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        _fail(f"{option}: cannot create {directory!r} ({exc.strerror or exc})")
    if not os.access(directory, os.W_OK | os.X_OK):
        _fail(f"{option}: {directory!r} is not writable")


def check_storage(url):
    """A SQLite storage must be a file we can create or write."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return
    path = url[len(prefix) :]
    if not path or path == ":memory:":
        return
    if os.path.isdir(path):
        _fail(f"--storage {url}: {path!r} is a directory")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            _fail(f"--storage {url}: {path!r} is not writable")
        return
    _writable_directory(os.path.dirname(os.path.abspath(path)), f"--storage {url}")


def trial_config(args):
    """What every trial receives besides its parameters and seed."""
    from .trial import DEFAULT_HIDDEN, data_options

    args.split_seed = args.seed
    defaults = {
        "lr": args.lr,
        "optimizer": args.optimizer,
        "batch_size": args.batch_size,
        "weight_decay": 0.0,
        "dropout": 0.0,
        "batchnorm": False,
        **DEFAULT_HIDDEN,
    }
    return {
        "model": args.model,
        "epochs": args.epochs,
        "data": data_options(args),
        "defaults": defaults,
    }


def check_data(args, config):
    """Load the data here first (unless the cluster is remote): a missing dataset is an
    error before any worker starts; with ``--workers 0`` this is the trials' copy."""
    if args.scheduler:
        return
    from .trial import load_split

    try:
        x_train, _, x_val, *_ = load_split(config["data"])
    except (FileNotFoundError, ValueError) as exc:
        _fail(f"--dataset {args.dataset}: {exc}")
    if len(x_train) < 1 or len(x_val) < 1:
        _fail(
            f"--train-size/--val-fraction leave {len(x_train)} training and {len(x_val)} "
            "validation images; both need at least one"
        )


def _start(args, config):
    """Open the executor (local cluster or --scheduler)."""
    from .cluster import SweepSetupError, default_workers, open_executor

    workers = default_workers() if args.workers is None else args.workers
    if not args.scheduler:
        if max(workers, 1) * args.threads > default_workers():
            print(
                f"nntrain: warning: {max(workers, 1)} x {args.threads} threads on "
                f"{default_workers()} cores oversubscribe them",
                file=sys.stderr,
            )
    try:
        executor = open_executor(
            args.scheduler,
            workers,
            args.connect_timeout,
            local_processes=args.local_cluster == "processes",
            threads=args.threads,
        )
    except SweepSetupError as exc:
        _fail(str(exc))
    if not args.quiet:
        where = args.scheduler or (
            f"{workers} local worker process(es)" if workers else "this process"
        )
        print(
            f"running trials on {where}"
            + (f"; dashboard {executor.dashboard}" if executor.dashboard else ""),
            flush=True,
        )
    return executor


def prepare(args):
    """Everything checked and built that does not start anything: ``(space, config)``."""
    from . import require

    for module in ("optuna", "distributed", "tqdm", "matplotlib", "filelock"):
        require(module)
    check_args(args)
    try:
        space = build_space(args)
    except SpaceError as exc:
        _fail(str(exc))
    if args.command == "sweep":
        if not space.dimensions or all(d.kind == "fixed" for d in space.dimensions.values()):
            _fail(
                "--param/--space: nothing to search; give at least one range or choice "
                "(or use nntrain repeat)"
            )
        _writable_directory(args.out, "--out")
        args.storage = args.storage or "sqlite:///" + os.path.join(args.out, "study.sqlite3")
        check_storage(args.storage)
    else:
        try:
            space.fixed()
        except SpaceError as exc:
            _fail(str(exc))
        _writable_directory(args.out, "--out")
    config = trial_config(args)
    check_data(args, config)
    return space, config


def run_sweep(args):
    from .report import BestNetworkSaver, write_report
    from .runner import ResultsFile, Sweep, SweepAborted, open_study
    from .trial import warm_worker

    space, config = prepare(args)
    stored_config = {**config, "space": space.describe(), "seed": args.seed, "pruner": args.pruner}
    executor = _start(args, config)
    try:
        # the workers load data and kernels while the study opens (--workers 0: before)
        executor.warm_up(warm_worker, config, space.warm_up_params())
        study = open_study(args.storage, args.study_name, stored_config)
        sweep = Sweep(
            study,
            space,
            executor,
            config,
            trials=args.trials,
            seed=args.seed,
            sampler=args.sampler,
            pruner=args.pruner,
            results=ResultsFile(os.path.join(args.out, "results.jsonl")),
            best_saver=BestNetworkSaver(args.out, config),
            threads=args.threads,
            quiet=args.quiet,
        )
        start = time.perf_counter()
        sweep.run()
        loop_seconds = time.perf_counter() - start  # the ask/submit/tell loop alone
    except SweepAborted as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        print("nntrain sweep: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        executor.close()
    if not args.quiet:
        print(f"sweep finished in {loop_seconds:.1f} s")
    write_report(study, args.out, quiet=args.quiet)
    return 0


def run_repeat(args):
    from .repeat import repeat
    from .trial import warm_worker

    space, config = prepare(args)
    executor = _start(args, config)
    try:
        executor.warm_up(warm_worker, config, space.warm_up_params())
        repeat(
            executor,
            config,
            space.fixed(),
            seeds=range(args.seed, args.seed + args.seeds),
            out_dir=args.out,
            threads=args.threads,
            quiet=args.quiet,
        )
    except KeyboardInterrupt:
        print("nntrain repeat: interrupted", file=sys.stderr)
        return 130
    finally:
        executor.close()
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "sweep":
        return run_sweep(args)
    return run_repeat(args)
