"""Mini-batch training loop with the book's ``Trainer`` interface.

Differences from the book, all deliberate:

* an epoch is ``ceil(train_size / mini_batch_size)`` steps (the book's float count only
  evaluates at step 0 when the batch size does not divide the training set);
* accuracies are evaluated after the *last* step of each epoch (the book evaluates after
  the first), so ``train_acc_list[-1]`` is the final accuracy;
* the recorded training loss is, by default, the one from the forward pass that the
  gradient was computed on (before the update); ``loss_after_update=True`` reproduces the
  book's extra forward pass after the update;
* progress is a tqdm bar per epoch plus one summary line per epoch instead of a print
  per step.
"""

import copy
import math
import os
import sys
import time

import numpy as np

from ._io import (
    LoadError,
    checked_arrays,
    describe,
    display_name,
    load_file,
    printable,
    save_file,
    values_budget,
)
from ._rng_states import check_rng_state
from .optimizers import make_optimizer

__all__ = ["Trainer"]

_CHECKPOINT_VERSION = 1


def _require_tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the progress bar needs tqdm: pip install 'nnkernels[train]' "
            "(or pass verbose=False / quiet=True)"
        ) from None
    return tqdm


def _batch_sampler(rng):
    """Return ``(sample(train_size, batch_size), get_state(), set_state(state))``."""
    if rng is None:
        return (lambda n, b: np.random.choice(n, b), np.random.get_state, np.random.set_state)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if isinstance(rng, np.random.Generator):

        def set_state(state):
            rng.bit_generator.state = state

        return (lambda n, b: rng.integers(0, n, size=b), lambda: rng.bit_generator.state, set_state)
    if isinstance(rng, np.random.RandomState):
        return (lambda n, b: rng.choice(n, b), rng.get_state, rng.set_state)
    raise TypeError(
        "rng: expected None, an int seed, a numpy Generator or RandomState, "
        f"got {type(rng).__name__}"
    )


class Trainer:
    """Train ``network`` with mini-batches sampled with replacement.

    Positional/keyword arguments follow the book. Keyword-only extras:

    * ``quiet``: no progress bar and no printing (same as ``verbose=False``);
    * ``rng``: batch-sampling randomness (``None``: global ``np.random.choice`` like the
      book; an int seed or a ``Generator``/``RandomState``);
    * ``checkpoint_path``: after every epoch, atomically save params, batch-norm
      buffers, optimizer state, counters, histories and RNG states there;
    * ``resume``: if ``checkpoint_path`` exists, continue from it (training then proceeds
      exactly as the uninterrupted run would have); a ``.npz`` path is written without
      pickle;
    * ``trusted``: resume with plain :func:`pickle.load`, which can run arbitrary code
      (default: only the plain data a checkpoint holds is unpickled, see
      ``load_checkpoint``);
    * ``loss_after_update``: record the loss of an extra forward pass after each update,
      as the book does (costs one forward per step);
    * ``eval_batch_size``: batch size passed to ``network.accuracy`` (if it accepts one);
    * ``file``: where summary lines go (default ``sys.stdout``).

    Histories: ``train_loss_list`` (one per step), ``train_acc_list``/``test_acc_list``
    (one per epoch), ``epoch_times`` (seconds spent in training steps per epoch) and
    ``eval_times`` (seconds spent evaluating per epoch).
    """

    def __init__(
        self,
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=20,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param={"lr": 0.01},  # noqa: B006
        evaluate_sample_num_per_epoch=None,
        verbose=True,
        *,
        quiet=False,
        rng=None,
        checkpoint_path=None,
        resume=False,
        trusted=False,
        loss_after_update=False,
        eval_batch_size=None,
        file=None,
    ):
        if len(x_train) != len(t_train):
            raise ValueError(
                f"x_train/t_train: sample counts differ ({len(x_train)} vs {len(t_train)})"
            )
        if len(x_test) != len(t_test):
            raise ValueError(
                f"x_test/t_test: sample counts differ ({len(x_test)} vs {len(t_test)})"
            )
        if len(x_train) == 0:
            raise ValueError("x_train: expected at least one sample, got 0")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {epochs!r}")
        if (
            isinstance(mini_batch_size, bool)
            or not isinstance(mini_batch_size, (int, np.integer))
            or mini_batch_size <= 0
        ):
            raise ValueError(f"mini_batch_size: expected a positive int, got {mini_batch_size!r}")
        if resume and checkpoint_path is None:
            raise ValueError("resume: needs checkpoint_path")

        self.network = network
        self.verbose = bool(verbose) and not quiet
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.loss_after_update = loss_after_update
        self.eval_batch_size = eval_batch_size
        self.file = file
        if isinstance(optimizer, str):
            self.optimizer = make_optimizer(optimizer, **(optimizer_param or {}))
        elif hasattr(optimizer, "update"):
            self.optimizer = optimizer
        else:
            raise TypeError(
                "optimizer: expected a name or an object with update(params, grads), "
                f"got {optimizer!r}"
            )
        self._sample, self._get_rng_state, self._set_rng_state = _batch_sampler(rng)

        self.train_size = len(x_train)
        self.iter_per_epoch = max(math.ceil(self.train_size / self.batch_size), 1)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []
        self.epoch_times = []
        self.eval_times = []
        self._epoch_step_time = 0.0

        self.checkpoint_path = None if checkpoint_path is None else os.fspath(checkpoint_path)
        if resume and os.path.lexists(self.checkpoint_path):  # a broken link is an error
            self.load_checkpoint(self.checkpoint_path, trusted=trusted)

    # ------------------------------------------------------------ stepping
    def train_step(self):
        """One update on a random mini-batch; evaluates when it completes an epoch.

        Returns the recorded loss.
        """
        loss = self._step()
        if self.current_iter % self.iter_per_epoch == 0:
            self._end_epoch()
        return loss

    def _step(self):
        start = time.perf_counter()
        batch_mask = self._sample(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]
        grads = self.network.gradient(x_batch, t_batch)
        loss = getattr(self.network, "last_loss", None)
        self.optimizer.update(self.network.params, grads)
        if self.loss_after_update or loss is None:
            loss = self.network.loss(x_batch, t_batch)
        loss = float(loss)
        self.train_loss_list.append(loss)
        self.current_iter += 1
        self._epoch_step_time += time.perf_counter() - start
        return loss

    def _accuracy(self, x, t):
        if self.eval_batch_size is None:
            return self.network.accuracy(x, t)
        return self.network.accuracy(x, t, batch_size=self.eval_batch_size)

    def evaluate(self):
        """``(train_acc, test_acc)`` on the (optionally truncated) training and test sets."""
        x_tr, t_tr, x_te, t_te = self.x_train, self.t_train, self.x_test, self.t_test
        n = self.evaluate_sample_num_per_epoch
        if n is not None:
            x_tr, t_tr, x_te, t_te = x_tr[:n], t_tr[:n], x_te[:n], t_te[:n]
        return float(self._accuracy(x_tr, t_tr)), float(self._accuracy(x_te, t_te))

    def _end_epoch(self):
        self.current_epoch += 1
        start = time.perf_counter()
        train_acc, test_acc = self.evaluate()
        self.eval_times.append(time.perf_counter() - start)
        self.epoch_times.append(self._epoch_step_time)
        self._epoch_step_time = 0.0
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        if self.verbose:
            self._print(self.epoch_summary(self.current_epoch - 1))
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)

    def epoch_summary(self, index=-1):
        """One line describing epoch ``index`` of the history."""
        index = range(len(self.epoch_times))[index]
        losses = self.train_loss_list[
            index * self.iter_per_epoch : (index + 1) * self.iter_per_epoch
        ]
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        step_ms = 1000 * self.epoch_times[index] / self.iter_per_epoch
        return (
            f"epoch {index + 1:>3}/{self.epochs}  loss {mean_loss:.4f}  "
            f"train acc {self.train_acc_list[index]:.4f}  "
            f"test acc {self.test_acc_list[index]:.4f}  "
            f"time {self.epoch_times[index]:.2f}s  step {step_ms:.2f}ms"
        )

    def _print(self, line):
        out = self.file if self.file is not None else sys.stdout
        print(line, file=out, flush=True)

    def train(self):
        """Run the remaining steps up to ``epochs`` epochs; return the final test accuracy."""
        tqdm = _require_tqdm() if self.verbose else None
        while self.current_iter < self.max_iter:
            epoch = self.current_epoch
            steps = self.iter_per_epoch - self.current_iter % self.iter_per_epoch
            bar = None
            if tqdm is not None:
                bar = tqdm(
                    total=self.iter_per_epoch,
                    initial=self.iter_per_epoch - steps,
                    desc=f"epoch {epoch + 1}/{self.epochs}",
                    leave=False,
                    file=sys.stderr,
                    unit="step",
                    dynamic_ncols=True,
                )
            try:
                for _ in range(steps):
                    loss = self._step()
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                        bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
            self._end_epoch()
        test_acc = (
            float(self._accuracy(self.x_test, self.t_test)) if len(self.x_test) else float("nan")
        )
        if self.verbose:
            self._print(f"final test acc {test_acc:.4f}")
        return test_acc

    def history(self):
        """The histories as plain lists (JSON-serialisable)."""
        return {
            "train_loss": [float(v) for v in self.train_loss_list],
            "train_acc": [float(v) for v in self.train_acc_list],
            "test_acc": [float(v) for v in self.test_acc_list],
            "epoch_times": [float(v) for v in self.epoch_times],
            "eval_times": [float(v) for v in self.eval_times],
            "iter_per_epoch": self.iter_per_epoch,
            "mini_batch_size": self.batch_size,
        }

    # ------------------------------------------------------------ checkpoints
    def state_dict(self):
        """Everything needed to continue training identically."""
        net = self.network
        opt_state = self.optimizer.state_dict() if hasattr(self.optimizer, "state_dict") else None
        return {
            "version": _CHECKPOINT_VERSION,
            "params": {k: np.array(v) for k, v in net.params.items()},
            "buffers": net.buffers() if hasattr(net, "buffers") else {},
            "optimizer_class": type(self.optimizer).__name__,
            "optimizer_state": opt_state,
            "current_iter": self.current_iter,
            "current_epoch": self.current_epoch,
            "train_size": self.train_size,
            "mini_batch_size": self.batch_size,
            "train_loss_list": list(self.train_loss_list),
            "train_acc_list": list(self.train_acc_list),
            "test_acc_list": list(self.test_acc_list),
            "epoch_times": list(self.epoch_times),
            "eval_times": list(self.eval_times),
            "batch_rng_state": self._get_rng_state(),
            # the book's Dropout draws its masks from the global generator
            "global_rng_state": np.random.get_state(),
        }

    def save_checkpoint(self, path):
        """Write ``state_dict()`` atomically to ``path`` (``.npz``: without pickle)."""
        save_file(self.state_dict(), path)

    def load_checkpoint(self, path, *, trusted=False, allow_nonfinite=False):
        """Restore a checkpoint written by ``save_checkpoint``, checking all of it first.

        Every field is checked for its type and range: arrays against the network's
        parameters and buffers, the optimizer's state by its ``load_state_dict``, counters
        as non-negative ints consistent with each other and with the histories' lengths,
        histories as finite numbers, random generator states against the generators' own.

        Parameters
        ----------
        path : str or os.PathLike
            A ``.npz`` archive or a pickle.
        trusted : bool
            Unpickle with plain :func:`pickle.load` (can run arbitrary code); by default
            only dicts, lists, tuples, strings, numbers, ``None`` and NumPy arrays and
            scalars.
        allow_nonfinite : bool
            Accept NaN and infinite parameters, optimizer state and losses (a diverged
            run).

        Raises
        ------
        nntrain.LoadError
            The file is damaged, holds a refused object or an ill-formed field, needs more
            memory than :meth:`checkpoint_budget`, or was written for another network,
            optimizer, data size or batch size; the network, optimizer, trainer and random
            generators are then unchanged.
        """
        source = display_name(path)
        state = load_file(path, trusted=trusted, budget=self.checkpoint_budget())
        apply = self._checked_checkpoint(state, source, allow_nonfinite)
        for step in apply:
            step()

    def checkpoint_budget(self):
        """The most memory reading a checkpoint of this trainer may take
        (:class:`~nntrain._io.Budget`): three times its network's parameters, as many
        again for batch-norm buffers and once more per optimizer state array, at 8 bytes
        each; 256 bytes per history entry of its epochs; and 1 MiB."""
        count = sum(np.size(value) for value in self.network.params.values())
        arrays = 2 + len(getattr(self.optimizer, "_state_names", ()))
        history = self.max_iter + self.iter_per_epoch + 4 * (self.epochs + 1)
        return values_budget(
            arrays * count,
            f"{arrays} x the network's {count} parameters",
            extra=256 * history,
            extra_basis=f", 256 bytes per each of {history} history entries",
        )

    def _checked_fields(self, state, source):
        """Refuse a state that is not a checkpoint of this version and of this trainer."""
        if not isinstance(state, dict):
            raise LoadError(f"{source}: not a trainer checkpoint: found {describe(state)}")
        version = state.get("version")
        if type(version) is not int or version != _CHECKPOINT_VERSION:
            raise LoadError(
                f"{source}: not a trainer checkpoint (version {_CHECKPOINT_VERSION}): "
                f"version is {describe(version)}"
            )
        fields = set(self.state_dict())
        missing = sorted(fields - set(state))
        if missing:
            raise LoadError(f"{source}: checkpoint lacks {missing}")
        unknown = sorted(set(state) - fields, key=str)
        if unknown:
            raise LoadError(f"{source}: checkpoint has unknown fields {unknown[:10]}")
        for key, mine in (
            ("train_size", self.train_size),
            ("mini_batch_size", self.batch_size),
            ("optimizer_class", type(self.optimizer).__name__),
        ):
            value = state[key]
            kind = str if isinstance(mine, str) else int
            if type(value) is not kind or value != mine:
                raise LoadError(
                    f"{source}: checkpoint {key} is {describe(value)} but this trainer has {mine!r}"
                )

    def _checked_counters(self, state, source, allow_nonfinite):
        """``(counters, histories)``: the step and epoch counts and the history lists,
        checked for type, range and consistency with each other."""
        counters = {}
        for key in ("current_iter", "current_epoch"):
            value = state[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value < 2**63
            ):
                raise LoadError(
                    f"{source}: {key}: expected a non-negative int, found {describe(value)}"
                )
            counters[key] = int(value)
        epochs = counters["current_iter"] // self.iter_per_epoch
        if counters["current_epoch"] != epochs:
            raise LoadError(
                f"{source}: current_epoch is {counters['current_epoch']} but current_iter "
                f"{counters['current_iter']} at {self.iter_per_epoch} steps per epoch "
                f"makes {epochs}"
            )
        histories = {}
        for key, length, finite, nonnegative in (
            ("train_loss_list", counters["current_iter"], not allow_nonfinite, False),
            ("train_acc_list", epochs, True, False),
            ("test_acc_list", epochs, True, False),
            ("epoch_times", epochs, True, True),
            ("eval_times", epochs, True, True),
        ):
            value = state[key]
            if type(value) is not list or len(value) != length:
                raise LoadError(
                    f"{source}: {key}: expected a list of {length} numbers (one per "
                    f"{'step' if key == 'train_loss_list' else 'epoch'}), found "
                    f"{describe(value)}"
                )
            histories[key] = [
                self._checked_number(v, source, f"{key}[{i}]", finite, nonnegative)
                for i, v in enumerate(value)
            ]
        return counters, histories

    @staticmethod
    def _checked_number(value, source, key, finite, nonnegative):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise LoadError(f"{source}: {key}: expected a number, found {describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if (finite and not math.isfinite(number)) or (nonnegative and not number >= 0):
            expected = "a finite number" if finite else "a number"
            raise LoadError(
                f"{source}: {key}: expected {expected}"
                f"{' >= 0' if nonnegative else ''}, found {describe(value)}"
            )
        return number

    def _checked_checkpoint(self, state, source, allow_nonfinite):
        """Check every part of ``state``; return the calls that apply it."""
        self._checked_fields(state, source)
        net = self.network
        params = checked_arrays(
            state["params"], net.params, source=source, allow_nonfinite=allow_nonfinite
        )

        def apply_params():
            if hasattr(net, "set_params"):
                net.set_params(params, source=source, allow_nonfinite=True)
            else:  # a network of the user's, whose layers may hold its arrays
                for key, value in params.items():
                    net.params[key][...] = value

        apply = [apply_params]
        if hasattr(net, "checked_buffers"):
            buffers = net.checked_buffers(
                state["buffers"], source=source, allow_nonfinite=allow_nonfinite
            )
            apply.append(lambda: net.set_buffers(buffers, source=source, allow_nonfinite=True))
        opt_state = state["optimizer_state"]
        if opt_state is not None:
            opt_state = self._checked_optimizer_state(opt_state, source, allow_nonfinite)
            apply.append(lambda: self.optimizer.load_state_dict(opt_state))
        counters, histories = self._checked_counters(state, source, allow_nonfinite)
        self._check_rng_state(
            self._get_rng_state,
            self._set_rng_state,
            state["batch_rng_state"],
            source,
            "batch_rng_state",
        )
        self._check_rng_state(
            np.random.get_state,
            np.random.set_state,
            state["global_rng_state"],
            source,
            "global_rng_state",
        )

        def apply_trainer_state():
            for key, value in counters.items():
                setattr(self, key, value)
            for key, value in histories.items():
                setattr(self, key, value)
            self._set_rng_state(state["batch_rng_state"])
            np.random.set_state(state["global_rng_state"])

        return apply + [apply_trainer_state]

    def _checked_optimizer_state(self, opt_state, source, allow_nonfinite):
        """The optimizer state with its arrays checked against the network's params and
        the rest by the optimizer's own ``load_state_dict`` (on a copy)."""
        opt = self.optimizer
        if not isinstance(opt_state, dict):
            raise LoadError(
                f"{source}: optimizer_state: expected a dict, found {describe(opt_state)}"
            )
        checked = dict(opt_state)
        for name in getattr(opt, "_state_names", ()):
            if checked.get(name) is not None:
                checked[name] = checked_arrays(
                    checked[name],
                    self.network.params,
                    source=source,
                    what=f"{type(opt).__name__} {name}",
                    allow_nonfinite=allow_nonfinite,
                )
        scratch = copy.deepcopy(opt)
        try:
            scratch.load_state_dict(checked)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LoadError(f"{source}: optimizer_state: {printable(str(exc)[:300])}") from None
        return checked

    @staticmethod
    def _check_rng_state(get_state, set_state, new, source, key):
        """Check ``new`` against the generator's own state, try it on the generator and
        put the generator's state back."""
        old = get_state()
        check_rng_state(new, old, source, key)
        try:
            set_state(new)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise LoadError(
                f"{source}: {key}: not a state of this generator: {printable(str(exc)[:200])}"
            ) from None
        finally:
            set_state(old)
