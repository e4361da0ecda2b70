"""Hyperparameter sweeps and multi-seed runs: Optuna for the search, Dask for execution.

``nntrain sweep`` and ``nntrain repeat`` (see ``nntrain.sweep.cli``). Install with
``pip install 'nnkernels[sweep]'``; nothing in ``nnkernels``/``nnlayers`` needs it.

Architecture
------------
* **Client** (the ``nntrain sweep`` process) owns the Optuna study: it ``ask``s a trial,
  submits one Dask task per trial (``pure=False``) and ``tell``s the result as futures
  complete. Only the client opens the storage, so any Optuna storage URL works (SQLite
  file by default) and workers need no access to it. Two trials per worker thread are in
  flight (one running, one queued), so no worker waits while the client records a
  result; TPE samples with all results but those of the trials in flight.
* **Workers** run ``trial.run_trial``: set the kernels' and BLAS threads to the trial's
  share (1 per worker thread), warm the JIT cache once per process (under a file lock next
  to Numba's cache, so workers on one machine never compile into it at once; the client
  also precompiles before starting a local cluster), load the data once per process
  (cached by data options; a remote worker must be able to read the dataset itself:
  digits come with scikit-learn, Fashion-MNIST from ``dataset-fashion-mnist`` or
  ``--data-dir``), train, and return curves, accuracies, time and worker as a dict.
* **Storage**: each trial's parameters (``all_params`` with the fixed ones), seed,
  per-epoch curves (user attributes ``val_acc``, ``train_acc``, ``epoch_loss``: one
  commit each, where Optuna's ``report`` would commit per epoch, about 1 s per 50-epoch
  trial on SQLite here), validation and test accuracy, seconds and worker; plus a results
  file (JSON lines) appended as trials finish.

Failures
--------
* A trial that raises or whose loss becomes non-finite returns its reason; it is told
  ``FAIL`` with ``failure`` = ``error``/``diverged`` and counts as finished.
* A worker killed mid-trial: Dask re-runs the task elsewhere (up to
  ``distributed.scheduler.allowed-failures``); past that, ``KilledWorker`` reaches the
  client, the trial is told ``FAIL`` (``failure = "lost"``) and another trial is asked
  for. Lost and interrupted trials do not count towards ``--trials``.
* Resume: trials left ``RUNNING`` by a client that died (Ctrl-C, crash) are marked
  ``FAIL`` (``failure = "interrupted"``) and replaced; finished ones are kept. A study
  already complete starts no cluster. A file in ``--out`` that cannot be written stops
  the sweep with an error naming it (the trials in flight are told ``FAIL``, as for
  Ctrl-C); if it was the best trial's network, the next run trains that trial again (its
  curves depend only on its parameters and seed) and saves it.
* One client per study: ``sweep`` and ``repeat`` hold a lock file in ``--out`` while they
  run, and a second command on the same ``--out`` is refused at once, naming the first.
  A study shared through another ``--storage`` URL must be kept to one client by hand.
* Ctrl-C: the local cluster's workers ignore SIGINT and the client stops them in order;
  storage writes finish before the interrupt is taken, so the trials in flight are told
  ``FAIL`` (interrupted) and the next run replaces them.

Pruning
-------
The median pruner is applied on the worker from thresholds the client computes when it
submits a trial (the median validation accuracy per epoch of the trials completed then, as
Optuna's ``MedianPruner`` with 5 startup trials). No round trip per epoch and no storage
access from workers, so it works on remote clusters; the cost is that a trial does not see
results that arrive while it runs. The curve up to the pruning point still depends only on
the parameters and seed.
"""

import importlib

__all__ = ["require"]


def require(module):
    """Import an optional dependency of the sweep, or fail telling how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"nntrain sweep needs {module.split('.')[0]}: pip install 'nnkernels[sweep]'"
        ) from None
