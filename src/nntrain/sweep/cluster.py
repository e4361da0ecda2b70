"""Where trials run: a Dask cluster (local by default, or any scheduler by address), or
this process (``--workers 0``, trials one after another).

Both executors offer ``submit(fn, *args, **kwargs)`` returning a future with
``result()``, ``warm_up(fn, *args)`` running ``fn`` once on each worker ahead of the
trials, ``wait_first(futures)`` returning the finished ones, ``slots()`` (trials that
can run at once), ``prefetch()`` (trials to queue beyond those) and ``dashboard`` (a URL
or ``None``).
"""

import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading

from . import require

#: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand freed memory
#: back to the system). Setting it turns off glibc's adaptive mmap threshold, so every
#: array above 128 KiB is mapped afresh and page-faulted on each allocation.
TRIM_SETTING = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
#: Dask's worker profiler interrupts the running task every 10 ms to walk its stack.
PROFILE_SETTING = "distributed.worker.profile.enabled"
#: The Dask settings of local clusters (``None``: leave the variable unset);
#: docs/dask-workers.yaml makes the same choices for workers started elsewhere, and
#: :func:`slow_worker_warning` tells users of workers that lack the first two.
#: The periodic checks (the event loop's responsiveness; the memory watch of nannies
#: and workers, so a runaway trial is stopped or spilled up to 1 s later; the system
#: monitor behind heartbeats and the dashboard's CPU and memory plots) run less often:
#: every 20, 100 and 500 ms, they took about 10% of a core in an idle two-worker
#: cluster. docs/sweep.md has the costs.
LOCAL_CLUSTER_CONFIG = {
    TRIM_SETTING: None,
    PROFILE_SETTING: False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def dask_setup(worker):
    """Dask's preload hook, run as each local-cluster worker starts: the worker ignores
    SIGINT. Ctrl-C in a terminal signals every process of the foreground group; only the
    client should act on it, stopping the workers in order (a worker that takes the
    interrupt itself dies printing tracebacks)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def quiet_shutdown():
    """For the block: Dask's loggers in this process print nothing, and SIGINT is ignored
    (in the main thread), so that stopping a cluster neither prints nor is cut short."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        logger.setLevel(level)


def worker_settings():
    """The settings of this process that slow trials down: glibc's malloc variables and,
    in a Dask worker, ``"dask_profiler": True`` when its profiler runs."""
    names = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
    settings = {name: os.environ[name] for name in names if name in os.environ}
    distributed = sys.modules.get("distributed")  # a Dask worker has imported it
    try:
        if distributed and "profile" in distributed.get_worker().periodic_callbacks:
            settings["dask_profiler"] = True
    except ValueError:  # not in a Dask worker
        pass
    return settings


def slow_worker_warning(settings, worker):
    """A warning for a worker whose ``worker_settings()`` are ``settings``, or None."""
    problems = []
    if "MALLOC_TRIM_THRESHOLD_" in settings and "MALLOC_MMAP_THRESHOLD_" not in settings:
        problems.append(
            f"MALLOC_TRIM_THRESHOLD_={settings['MALLOC_TRIM_THRESHOLD_']} (Dask's default: "
            "arrays above 128 KiB are then mapped afresh on every allocation, which can make "
            "trials twice as slow)"
        )
    if settings.get("dask_profiler"):
        problems.append("Dask's profiler on (it interrupts trials every 10 ms)")
    if not problems:
        return None
    return (
        f"nntrain: warning: worker {worker} runs with {' and '.join(problems)}; start its "
        f"workers with the Dask settings {TRIM_SETTING} set to null and {PROFILE_SETTING} "
        "set to false (docs/dask-workers.yaml, see docs/sweep.md)"
    )


class SlowWorkerNotice:
    """Shows :func:`slow_worker_warning` for the first result from a slow worker only."""

    def __init__(self):
        self.shown = False

    def check(self, result, write):
        """Call ``write(message)`` if ``result`` (a trial's) is the first from a slow worker."""
        if self.shown:
            return
        settings = result.get("worker_settings", {})
        warning = slow_worker_warning(settings, result.get("worker"))
        if warning:
            self.shown = True
            write(warning)


def thread_env(threads):
    """Environment of local-cluster workers: ``threads`` for Numba and BLAS in each."""
    return {
        name: str(threads)
        for name in (
            "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
        )
    }


class SweepSetupError(RuntimeError):
    """A problem found before any trial ran; the message names the option."""


class InProcessExecutor:
    """Run each trial in this process's main thread when it is submitted.

    The main thread, not a helper thread, so that Ctrl-C interrupts the trial
    (``run_trial`` does not catch ``KeyboardInterrupt``).
    """

    dashboard = None

    @staticmethod
    def submit(fn, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future

    @staticmethod
    def wait_first(futures, timeout=None):
        return {future for future in futures if future.done()}

    def slots(self):
        return 1

    def prefetch(self):
        return 0

    @staticmethod
    def warm_up(fn, *args):
        """Run ``fn(*args)`` here now (this process is the only worker); returns ``[]``."""
        fn(*args)
        return []

    def close(self):
        pass


class DaskExecutor:
    """Submit trials to a ``distributed.Client``; one trial per worker thread at a time."""

    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster
        self.dashboard = (
            getattr(client, "dashboard_link", None)
            if cluster is not None
            else _scheduler_dashboard(client)
        )

    def submit(self, fn, *args, **kwargs):
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def warm_up(self, fn, *args):
        """Queue ``fn(*args)`` once on every worker connected now, ahead of any trial;
        returns the futures, which the caller need not keep (the tasks run and are
        then forgotten by the scheduler)."""
        distributed = require("distributed")
        futures = [
            self.client.submit(fn, *args, pure=False, workers=[address])
            for address in self.client.nthreads()
        ]
        distributed.fire_and_forget(futures)
        return futures

    @staticmethod
    def wait_first(futures, timeout=None):
        import distributed

        try:
            done, _ = distributed.wait(
                list(futures), timeout=timeout, return_when="FIRST_COMPLETED"
            )
        except TimeoutError:
            return set()
        return done

    def slots(self):
        return max(1, sum(self.client.nthreads().values()))

    def prefetch(self):
        """Trials queued beyond the running ones, so that no worker waits while the
        client records a result (an SQLite commit per value can take tens of ms)."""
        return self.slots()

    def close(self):
        """Close the client, then a local cluster (its workers, then its scheduler),
        quietly (:func:`quiet_shutdown`)."""
        with quiet_shutdown():
            with contextlib.suppress(Exception):
                self.client.close(timeout=10)
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close(timeout=10)


def _scheduler_dashboard(client):
    try:
        port = client.scheduler_info().get("services", {}).get("dashboard")
    except Exception:
        return None
    if not port:
        return None
    host = client.scheduler.address.split("://")[-1].rsplit(":", 1)[0]
    return f"http://{host}:{port}/status"


def open_executor(
    scheduler, workers, connect_timeout, local_processes=True, dashboard=True, threads=1
):
    """The executor for ``--scheduler``/``--workers``; raises ``SweepSetupError``.

    ``scheduler``: an address (``tcp://host:port``) or ``None`` for a local cluster of
    ``workers`` worker processes, each running one trial at a time with ``threads``
    threads (``workers=0``: run in this process).
    """
    if scheduler is None and workers == 0:
        return InProcessExecutor()
    distributed = require("distributed")
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepSetupError(
                f"--scheduler {scheduler}: no Dask scheduler answered within "
                f"{connect_timeout:g} s ({type(exc).__name__}: {exc})"
            ) from None
        return DaskExecutor(client)
    options = {"env": thread_env(threads)} if local_processes else {}
    with require("dask").config.set(LOCAL_CLUSTER_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=local_processes,
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
            # warnings of Dask's own (a task cancelled at Ctrl-C, a worker gone) would
            # cover the sweep's lines; its errors still show
            silence_logs=logging.ERROR,
            preload=[__name__],  # dask_setup: the workers leave Ctrl-C to the client
            **options,
        )
    client = distributed.Client(cluster)
    return DaskExecutor(client, cluster)


def default_workers():
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
