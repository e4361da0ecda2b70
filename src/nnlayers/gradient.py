"""Central-difference numerical gradient, for checking backward passes."""

import numpy as np

__all__ = ["numerical_gradient"]


def numerical_gradient(f, x, h=1e-4):
    """Gradient of scalar ``f(x)`` by central differences, same shape and dtype as ``x``.

    Like the reference, each element of ``x`` is perturbed *in place* by ``+-h`` and
    restored, so ``f`` may ignore its argument and read shared parameters instead.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"x must be a NumPy array (it is perturbed in place), got {type(x).__name__}"
        )
    if not x.flags.writeable:
        raise ValueError("x must be writeable: numerical_gradient perturbs it in place")
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        saved = x[idx]
        x[idx] = float(saved) + h
        f_plus = f(x)
        x[idx] = float(saved) - h
        f_minus = f(x)
        x[idx] = saved
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad
