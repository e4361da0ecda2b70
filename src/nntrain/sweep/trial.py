"""One training run with given parameters and seed: the task a Dask worker executes.

Everything here runs in the worker process (or in the client with ``--workers 0``) and
needs only NumPy, nnlayers and ``filelock``: no Optuna, no Dask client. The result is a
plain dict, so it travels back to the client as is.
"""

import math
import os
import socket
import threading
import time
import traceback

import numpy as np

from .cluster import worker_settings

#: per-process data cache: one load per worker, keyed by the data options
_DATA = {}
_DATA_LOCK = threading.Lock()
_WARM = set()
_WARM_LOCK = threading.Lock()

DEFAULT_HIDDEN = {"hidden_size": 100, "hidden_layers": 2}


def data_options(args):
    """The options that decide the data a trial sees (its key in the worker cache)."""
    return {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "digits_size": args.digits_size,
        "flatten": args.model == "mlp",
        "dtype": args.dtype,
        "train_size": args.train_size,
        "val_fraction": args.val_fraction,
        "split_seed": args.split_seed,
    }


def load_split(options):
    """``(x_train, t_train, x_val, t_val, x_test, t_test)`` for ``options`` (cached).

    The validation set is a fixed-seed random ``val_fraction`` of the first ``train_size``
    training images, as in the book's chapter 6; the test set is never used for choosing.
    """
    key = tuple(sorted(options.items()))
    with _DATA_LOCK:
        if key not in _DATA:
            _DATA[key] = _split(**options)
        return _DATA[key]


def _split(dataset, data_dir, digits_size, flatten, dtype, train_size, val_fraction, split_seed):
    from ..catalog import load_dataset

    (x_train, t_train), (x_test, t_test) = load_dataset(
        dataset, data_dir, flatten=flatten, digits_size=digits_size, train_count=train_size
    )
    order = np.random.default_rng(split_seed).permutation(len(x_train))
    n_val = int(len(x_train) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    dtype = np.dtype(dtype)
    return (
        x_train[train].astype(dtype),
        t_train[train],
        x_train[val].astype(dtype),
        t_train[val],
        x_test.astype(dtype),
        t_test,
    )


#: the groups of nnkernels' kernel table that each nnlayers layer class runs
KERNEL_GROUPS = {
    "Relu": ("relu",),
    "Affine": ("products",),
    "BatchNormalization": ("batchnorm",),
    "Pooling": ("max pooling",),
    "Convolution": ("convolution", "im2col/col2im per sample", "products"),
}


def kernel_groups(network):
    """The kernel groups ``network``'s layers run (see :data:`KERNEL_GROUPS`)."""
    names = {type(layer).__name__ for layer in network._layer_sequence()}
    return sorted({group for name in names for group in KERNEL_GROUPS.get(name, ())})


def warm_jit(dtype, groups=None):
    """Load (or compile) the kernels of ``groups`` (default: every group) for ``dtype``,
    each once per process.

    Compilation holds a file lock next to Numba's cache, so workers starting together on
    one machine never write one cache at once; on a warm cache this only loads kernels.
    """
    from nnkernels import kernel_groups as all_groups

    wanted = sorted(all_groups()) if groups is None else sorted(groups)
    with _WARM_LOCK:
        missing = [group for group in wanted if (dtype, group) not in _WARM]
        if not missing:
            return
        if not _WARM:
            _start_numba()
        import filelock

        from nnkernels import precompile

        with filelock.FileLock(_compile_lock_path()):
            precompile([dtype], processes=1, groups=missing)
        _WARM.update((dtype, group) for group in missing)


def _start_numba():
    # Numba sets its compiler up on first use (about 0.4 s); outside the lock, workers
    # starting together do that at once and then take turns only to load kernels
    import numba

    numba.njit(lambda: 0)()


def _compile_lock_path():
    import numba

    import nnkernels

    directory = numba.config.CACHE_DIR or os.path.join(
        os.path.dirname(nnkernels.__file__), "__pycache__"
    )
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, ".nntrain-sweep-compile.lock")
        with open(probe, "a"):
            return probe
    except OSError:
        import tempfile

        return os.path.join(tempfile.gettempdir(), "nntrain-sweep-compile.lock")


def warm_worker(config, params):
    """A worker's set-up ahead of its trials: load ``config``'s data and the kernels that
    a network with ``params`` (over ``config``'s defaults) runs.

    An error here is left for the trials to report: each loads the data and warms its
    own network's kernels again.
    """
    try:
        warm_network(config, params, np.random.default_rng(0))
    except Exception:
        pass


def warm_network(config, params, rng):
    """``(data, network, merged parameters)``: ``config``'s data (``load_split``) and the
    network of ``params`` over ``config``'s defaults, initialised from ``rng``, its
    kernels loaded in this process."""
    data = load_split(config["data"])
    merged = {**config["defaults"], **params}
    dtype = config["data"]["dtype"]
    network = build_network(config["model"], data[0].shape[1:], merged, dtype, rng)
    warm_jit(dtype, kernel_groups(network))
    return data, network, merged


def trial_seeds(seed):
    """``(init, batches, dropout)`` generators, all derived from the trial's ``seed``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def build_network(model, input_shape, params, dtype, rng):
    """The network of ``model`` with the sampled ``params`` (hidden sizes, dropout ...)."""
    from ..catalog import build_network as build_conv_or_mlp
    from ..networks import MultiLayerNetExtend

    if model != "mlp":
        return build_conv_or_mlp(model, input_shape, layers="nnlayers", dtype=dtype, rng=rng)
    hidden = [params.get("hidden_size", DEFAULT_HIDDEN["hidden_size"])] * params.get(
        "hidden_layers", DEFAULT_HIDDEN["hidden_layers"]
    )
    dropout = params.get("dropout", 0.0)
    return MultiLayerNetExtend(
        int(np.prod(input_shape)),
        hidden,
        10,
        weight_decay_lambda=params.get("weight_decay", 0.0),
        use_dropout=dropout > 0,
        dropout_ration=dropout,
        use_batchnorm=bool(params.get("batchnorm", False)),
        layers="nnlayers",
        dtype=dtype,
        rng=rng,
    )


def _seed_dropout(network, rng):
    # the layers draw dropout masks from the process-wide np.random unless given a
    # generator; two trials in two threads of one worker would then share it
    for layer in getattr(network, "layers", {}).values():
        if hasattr(layer, "dropout_ratio") and hasattr(layer, "rng"):
            layer.rng = rng


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()} (in process)"


def run_trial(config, params, seed, prune_below=None, threads=1, return_params=False):
    """Train one network; return a JSON-ready dict (plus ``"params_arrays"`` if asked).

    Parameters
    ----------
    config : dict
        ``model``, ``epochs``, ``data`` (``data_options``) and defaults for the
        parameters not in ``params``.
    params : dict
        The sampled parameters (``lr``, ``weight_decay``, ``optimizer`` ...).
    seed : int
        Seeds weight init, batch sampling and dropout; the curves depend on nothing else.
    prune_below : list of float or None
        Per-epoch thresholds (the median pruner's, computed by the client from the
        trials finished when this one was submitted): the trial stops after epoch ``e``
        if its best validation accuracy so far is below ``prune_below[e]``.
    threads : int
        Threads for the kernels and BLAS in this trial (at most ``NUMBA_NUM_THREADS``
        of the process; the count used is in the result).
    """
    import numba

    from nnkernels import set_num_threads

    from ..trainer import Trainer

    started = time.time()
    result = {
        "seed": int(seed),
        "params": dict(params),
        "worker": _worker_name(),
        "worker_settings": worker_settings(),
        "started": started,
        "train_acc": [],
        "val_acc": [],
        "epoch_loss": [],
        "test_acc": None,
        "status": "complete",
        "reason": None,
    }
    try:
        result["threads"] = min(threads, numba.config.NUMBA_NUM_THREADS)
        set_num_threads(result["threads"])
        init_rng, batch_rng, dropout_rng = trial_seeds(seed)
        data, network, merged = warm_network(config, params, init_rng)
        x_train, t_train, x_val, t_val, x_test, t_test = data
        result["input_shape"] = list(x_train.shape[1:])
        result["setup_seconds"] = time.time() - started
        _seed_dropout(network, dropout_rng)
        optimizer_param = {"lr": merged["lr"]} if merged.get("lr") is not None else {}
        trainer = Trainer(
            network,
            x_train,
            t_train,
            x_val,
            t_val,
            epochs=config["epochs"],
            mini_batch_size=int(merged["batch_size"]),
            optimizer=merged["optimizer"],
            optimizer_param=optimizer_param,
            quiet=True,
            rng=batch_rng,
        )
        for epoch in range(config["epochs"]):
            for _ in range(trainer.iter_per_epoch):
                trainer.train_step()
            losses = trainer.train_loss_list[-trainer.iter_per_epoch :]
            result["epoch_loss"].append(float(np.mean(losses)))
            result["train_acc"].append(trainer.train_acc_list[-1])
            result["val_acc"].append(trainer.test_acc_list[-1])
            if not all(math.isfinite(v) for v in losses):
                result.update(
                    status="diverged", reason=f"non-finite training loss in epoch {epoch + 1}"
                )
                break
            if (
                prune_below is not None
                and epoch < len(prune_below)
                and prune_below[epoch] is not None
                and max(result["val_acc"]) < prune_below[epoch]
            ):
                result.update(
                    status="pruned",
                    reason=f"validation accuracy {max(result['val_acc']):.4f} "
                    f"below the median {prune_below[epoch]:.4f} "
                    f"after epoch {epoch + 1}",
                )
                break
        if result["status"] == "complete":
            result["test_acc"] = float(network.accuracy(x_test, t_test))
            if return_params:
                result["params_arrays"] = {k: np.array(v) for k, v in network.params.items()}
                result["buffers_arrays"] = network.buffers()
    except Exception as exc:  # a trial that raises is recorded, the sweep goes on
        result.update(
            status="error",
            reason=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=8),
        )
    result["seconds"] = time.time() - started
    return result
