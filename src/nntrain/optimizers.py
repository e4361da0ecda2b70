"""The book's optimizers: ``update(params, grads)`` changes the arrays of ``params`` in place.

``params`` and ``grads`` are dicts of ndarrays with the same keys. Per-parameter state
(velocities, squared-gradient sums, moments) is created lazily as zeros shaped like each
parameter on the first update. ``state_dict()``/``load_state_dict()`` copy that state for
checkpoints.
"""

import numpy as np

__all__ = [
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "make_optimizer",
    "OPTIMIZERS",
]


def _check_positive(name, value):
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


def _check_fraction(name, value):
    if not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")


def _check_counter(name, value):
    """A step counter: a non-negative int64."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not 0 <= value <= np.iinfo(np.int64).max
    ):
        shown = f"an int of {int(value).bit_length()} bits" if isinstance(value, int) else value
        raise ValueError(f"{name}: expected a non-negative int64 step count, got {shown!r}")
    return int(value)


class _Optimizer:
    _state_names = ()  # dict-of-arrays attributes
    _scalar_names = ()  # step counters that change during training
    _nonnegative_names = ()  # state arrays that hold sums or averages of squares

    def _zeros_like(self, params):
        return {key: np.zeros_like(val) for key, val in params.items()}

    def state_dict(self):
        """Copies of the optimizer's mutable state (dicts of arrays, counters)."""
        state = {}
        for name in self._state_names:
            value = getattr(self, name)
            state[name] = None if value is None else {k: v.copy() for k, v in value.items()}
        for name in self._scalar_names:
            state[name] = getattr(self, name)
        return state

    def load_state_dict(self, state):
        """Restore ``state_dict()`` output, checking all of it first.

        Raises
        ------
        ValueError
            Missing or unknown names, a state entry that is not ``None`` or a dict of
            arrays, entries that must be set together but are not, a negative value in a
            sum of squares, or a step counter that is not a non-negative int64.
        """
        names = self._state_names + self._scalar_names
        if not isinstance(state, dict) or set(state) != set(names):
            found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"state: expected {sorted(names)} for {type(self).__name__}, found {found}"
            )
        arrays = {}
        for name in self._state_names:
            value = state[name]
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name}: expected None or a dict of arrays")
            arrays[name] = None if value is None else {k: np.array(v) for k, v in value.items()}
            if name in self._nonnegative_names and value is not None:
                for key, array in arrays[name].items():
                    if np.any(array < 0):
                        raise ValueError(f"{name} {key!r}: a sum of squares with negative values")
        if len({arrays[name] is None for name in self._state_names}) > 1:
            raise ValueError(f"{', '.join(self._state_names)}: all None or all set")
        counters = {name: _check_counter(name, state[name]) for name in self._scalar_names}
        for name, value in {**arrays, **counters}.items():
            setattr(self, name, value)

    def __repr__(self):
        args = ", ".join(
            f"{k}={v!r}"
            for k, v in vars(self).items()
            if k not in self._state_names + self._scalar_names
        )
        return f"{type(self).__name__}({args})"


class SGD(_Optimizer):
    """``W -= lr * dW``."""

    def __init__(self, lr=0.01):
        _check_positive("lr", lr)
        self.lr = lr

    def update(self, params, grads):
        for key in params.keys():
            params[key] -= self.lr * grads[key]


class Momentum(_Optimizer):
    """``v = momentum*v - lr*dW; W += v``."""

    _state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        _check_positive("lr", lr)
        _check_fraction("momentum", momentum)
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def _velocity(self, params, key, grad):
        """``v = momentum*v - lr*grad`` in place for ``key``; returns ``v``."""
        if self.v is None:
            self.v = self._zeros_like(params)
        v = self.v[key]
        v *= self.momentum
        v -= self.lr * grad
        return v

    def update(self, params, grads):
        for key in params.keys():
            params[key] += self._velocity(params, key, grads[key])


class Nesterov(Momentum):
    """Nesterov accelerated gradient in the book's reformulation:
    ``v = momentum*v - lr*dW; W += momentum**2 * v - (1 + momentum)*lr*dW``.
    """

    def update(self, params, grads):
        for key in params.keys():
            v = self._velocity(params, key, grads[key])
            params[key] += self.momentum * self.momentum * v
            params[key] -= (1 + self.momentum) * self.lr * grads[key]


class AdaGrad(_Optimizer):
    """``h += dW**2; W -= lr * dW / (sqrt(h) + 1e-7)``."""

    _state_names = ("h",)
    _nonnegative_names = ("h",)

    def __init__(self, lr=0.01):
        _check_positive("lr", lr)
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = self._zeros_like(params)
        for key in params.keys():
            g = grads[key]
            self.h[key] += g * g
            params[key] -= self.lr * g / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop(_Optimizer):
    """``h = decay*h + (1-decay)*dW**2; W -= lr * dW / (sqrt(h) + 1e-7)``."""

    _state_names = ("h",)
    _nonnegative_names = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99):
        _check_positive("lr", lr)
        _check_fraction("decay_rate", decay_rate)
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = self._zeros_like(params)
        for key in params.keys():
            g = grads[key]
            h = self.h[key]
            h *= self.decay_rate
            h += (1 - self.decay_rate) * g * g
            params[key] -= self.lr * g / (np.sqrt(h) + 1e-7)


class Adam(_Optimizer):
    """Adam with the book's bias correction folded into the step size:
    ``lr_t = lr*sqrt(1-beta2**t)/(1-beta1**t); m += (1-beta1)*(g-m);
    v += (1-beta2)*(g**2-v); W -= lr_t*m/(sqrt(v)+1e-7)``.
    """

    _state_names = ("m", "v")
    _scalar_names = ("iter",)
    _nonnegative_names = ("v",)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        _check_positive("lr", lr)
        _check_fraction("beta1", beta1)
        _check_fraction("beta2", beta2)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m = self._zeros_like(params)
            self.v = self._zeros_like(params)
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params.keys():
            g = grads[key]
            self.m[key] += (1 - self.beta1) * (g - self.m[key])
            self.v[key] += (1 - self.beta2) * (g**2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name, **params):
    """Build an optimizer from its case-insensitive name (``'SGD'``, ``'adam'``, ...)."""
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    try:
        return OPTIMIZERS[name.lower()](**params)
    except TypeError as exc:
        raise TypeError(f"optimizer_param for {name!r}: {exc}") from None
