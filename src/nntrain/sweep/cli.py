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

from .._io import display_name
from ..catalog import DATASETS, MODELS
from ..command import (
    CommandParser,
    OutputError,
    check_learning_rate,
    check_output_directory,
    check_positive,
    compile_notice,
    create_directory,
    directory_problem,
    fail,
)
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
    parser = CommandParser(
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
    """Refuse impossible option values before anything starts (one line, exit status 2)."""
    from .repeat import REPEAT_FILES
    from .report import SWEEP_FILES

    check_positive(
        args,
        ["epochs", "batch_size", "threads", "train_size"]
        + (["trials"] if args.command == "sweep" else ["seeds"]),
    )
    if args.workers is not None and args.workers < 0:
        fail(f"--workers must be >= 0, got {args.workers}")
    if args.workers is not None and args.scheduler:
        fail("--workers applies to the local cluster; not with --scheduler")
    if not 0 < args.val_fraction < 1:
        fail(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if not args.connect_timeout > 0:
        fail(f"--connect-timeout must be positive, got {args.connect_timeout}")
    check_learning_rate(args.lr)
    if args.dataset == "mnist-dir" and not (args.data_dir or os.environ.get("NNTRAIN_MNIST_DIR")):
        fail("--dataset mnist-dir needs --data-dir (or $NNTRAIN_MNIST_DIR)")
    if args.dataset == "digits" and args.data_dir:
        fail("--data-dir does not apply to --dataset digits")
    names = SWEEP_FILES if args.command == "sweep" else REPEAT_FILES
    check_output_directory(args.out, "--out", names)


def storage_directory(url):
    """The directory to create for the SQLite storage ``url`` (``None``: not SQLite, or
    in memory); refuses a path that could not be written (one line, exit status 2)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :]
    if not path or path == ":memory:":
        return None
    if os.path.isdir(path):
        fail(f"--storage {url}: {path} is a directory")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            fail(f"--storage {url}: {path} is not writable")
    directory = os.path.dirname(os.path.abspath(path))
    problem = directory_problem(directory)
    if problem:
        fail(f"--storage {url}: {directory} {problem}")
    return directory


def create_outputs(args):
    """Create the storage's directory and ``--out`` (after every check has passed)."""
    directory = getattr(args, "storage_directory", None)
    if directory is not None:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            fail(f"--storage {args.storage}: cannot create {directory} ({exc.strerror or exc})")
    create_directory(args.out, "--out")


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
        fail(f"--dataset {args.dataset}: {exc}")
    if len(x_train) < 1 or len(x_val) < 1:
        fail(
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
        fail(exc)
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
    """Everything checked and built that does not start or write anything:
    ``(space, config)``; a problem is one line and exit status 2."""
    from . import require

    for module in ("optuna", "distributed", "tqdm", "matplotlib", "filelock"):
        try:
            require(module)
        except ImportError as exc:
            fail(exc)
    check_args(args)
    try:
        space = build_space(args)
    except SpaceError as exc:
        fail(exc)
    if args.command == "sweep":
        if not space.dimensions or all(d.kind == "fixed" for d in space.dimensions.values()):
            fail(
                "--param/--space: nothing to search; give at least one range or choice "
                "(or use nntrain repeat)"
            )
        args.storage = args.storage or "sqlite:///" + os.path.join(args.out, "study.sqlite3")
        args.storage_directory = storage_directory(args.storage)
    else:
        try:
            space.fixed()
        except SpaceError as exc:
            fail(exc)
    config = trial_config(args)
    check_data(args, config)
    return space, config


def run_sweep(args):
    """``nntrain sweep``: returns the exit status."""
    from .lock import output_lock

    space, config = prepare(args)
    create_outputs(args)
    with output_lock(args.out, "sweep"):
        return _sweep(args, space, config)


def _sweep(args, space, config):
    from .report import BestNetworkSaver
    from .runner import ResultsFile, Sweep, SweepAborted, open_study

    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    stored_config = {**config, "space": space.describe(), "seed": args.seed, "pruner": args.pruner}
    saver = BestNetworkSaver(args.out, config)
    executor = None
    try:
        if args.scheduler:  # connecting checks --scheduler before the study is touched
            executor = _start(args, config)
        study = open_study(args.storage, args.study_name, stored_config)
        sweep = Sweep(
            study,
            space,
            config,
            trials=args.trials,
            seed=args.seed,
            sampler=args.sampler,
            pruner=args.pruner,
            results=ResultsFile(os.path.join(args.out, "results.jsonl")),
            best_saver=saver,
            threads=args.threads,
            quiet=args.quiet,
        )
        already = f"{sweep.finished} of {args.trials} trials already complete"
        if sweep.complete and saver.saved(study) is not None:
            say(already)  # nothing to run: no cluster is started
        else:
            if sweep.finished:
                say(already + ("" if sweep.complete else "; running the rest"))
            executor = executor or _start(args, config)
            _run_trials(args, sweep, executor, space, config, say)
            executor.close()
            executor = None
        _report(args, sweep, saver)
    except SweepAborted as exc:
        fail(exc, status=1)
    except OutputError as exc:
        fail(
            f"{exc}; the study keeps every finished trial: make room or fix the file, then "
            "run the same command again",
            status=1,
        )
    except KeyboardInterrupt:
        print("nntrain sweep: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        if executor is not None:
            executor.close()
    return 0


def _run_trials(args, sweep, executor, space, config, say):
    """Run the sweep's remaining trials on ``executor``, then save the best trial's network
    if an earlier run failed to."""
    from .trial import warm_worker

    with compile_notice(enabled=not args.quiet):  # --workers 0: warms up here, now
        executor.warm_up(warm_worker, config, space.warm_up_params())
    start = time.perf_counter()
    sweep.run(executor)
    say(f"sweep finished in {time.perf_counter() - start:.1f} s")  # the ask/submit/tell loop
    if sweep.best_saver.saved(sweep.study) is None:
        say("training the best trial again to save its network (an earlier write failed)")
        sweep.save_best_network(executor)


def _report(args, sweep, saver):
    """Write the report; print it, or with --quiet one line."""
    from .report import print_report, ranked, write_report

    study = sweep.study
    summary, written = write_report(study, args.out)
    written += saver.saved(study) or []
    if os.path.exists(sweep.results.path):
        written.append(os.path.basename(sweep.results.path))
    wrote = f"wrote {', '.join(written)} to {display_name(args.out)}"
    if not args.quiet:
        print_report(study, summary)
        print(wrote)
        return
    best = ranked(study)
    outcome = f"{sweep.finished} of {args.trials} trials finished"
    if best:
        test = best[0].user_attrs.get("test_acc")
        outcome += (
            f"; best val acc {best[0].value:.4f} (trial {best[0].number}"
            + ("" if test is None else f", test acc {test:.4f}")
            + ")"
        )
    print(f"{outcome}; {wrote}", flush=True)


def run_repeat(args):
    """``nntrain repeat``: returns the exit status."""
    from .lock import output_lock
    from .repeat import repeat
    from .trial import warm_worker

    space, config = prepare(args)
    create_outputs(args)
    with output_lock(args.out, "repeat"):
        executor = None
        try:
            executor = _start(args, config)
            with compile_notice(enabled=not args.quiet):
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
        except OutputError as exc:
            fail(exc, status=1)
        except KeyboardInterrupt:
            print("nntrain repeat: interrupted", file=sys.stderr)
            return 130
        finally:
            if executor is not None:
                executor.close()
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "sweep":
        return run_sweep(args)
    return run_repeat(args)
