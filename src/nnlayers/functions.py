"""Activation and loss functions with the reference's names and semantics.

Elementwise work is plain NumPy (already memory-bound and vectorised); dtypes follow NumPy
promotion, so float32 input stays float32.
"""

import numpy as np

__all__ = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "sum_squared_error",
    "cross_entropy_error",
    "softmax_loss",
]


def identity_function(x):
    return x


def step_function(x):
    """1 where ``x > 0`` else 0, as an int array."""
    return np.array(np.asarray(x) > 0, dtype=int)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, elementwise."""
    return 1 / (1 + np.exp(-x))


def sigmoid_grad(x):
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    return np.maximum(0, x)


def relu_grad(x):
    """1 where ``x >= 0`` else 0 (the reference's convention at 0), dtype of ``x``."""
    x = np.asarray(x)
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x):
    """Softmax over the last axis, shifted by the maximum for stability; shape of ``x``
    (an array subclass such as ``numpy.matrix`` is computed on as a plain array)."""
    x = np.asarray(x)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def sum_squared_error(y, t):
    return 0.5 * np.sum((y - t) ** 2)


def _label_indices(t, batch_size, classes):
    """Integer labels ``(N,)``, each in ``[0, classes)``, from labels ``(N,)`` or ``(N, 1)``."""
    t = np.asarray(t)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"t must be labels of shape ({batch_size},) or ({batch_size}, 1), "
            f"or one-hot ({batch_size}, classes); got shape {t.shape}"
        )
    if t.dtype.kind not in "iub":
        if t.dtype.kind == "f" and np.all(t == np.round(t)):
            t = t.astype(np.intp)
        else:
            raise TypeError(f"integer labels t must have an integer dtype, got {t.dtype}")
    outside = np.flatnonzero((t < 0) | (t >= classes))
    if outside.size:
        position = int(outside[0])
        raise ValueError(
            f"t: label {t[position]} at position {position} is out of range for {classes} "
            f"classes (expected 0 to {classes - 1})"
        )
    return t


def cross_entropy_error(y, t):
    """Mean cross-entropy ``-sum(log(y[label] + 1e-7)) / N``.

    ``y`` is ``(N, classes)`` probabilities (1-D means a batch of one); ``t`` is one-hot
    (detected by ``t.size == y.size``) or integer labels ``(N,)`` / ``(N, 1)``, each in
    ``[0, classes)`` (``ValueError`` naming the first label outside, and its position).
    """
    y = np.asarray(y)
    t = np.asarray(t)
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.reshape(y.shape).argmax(axis=1)
    batch_size = y.shape[0]
    t = _label_indices(t, batch_size, y.shape[1])
    total = -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7))
    # divided in total's own dtype: NumPy < 2 would turn a float32 scalar / int into float64
    return total / total.dtype.type(batch_size)


def softmax_loss(X, t):
    return cross_entropy_error(softmax(X), t)
