"""Batch normalisation reductions: per feature on ``(N, D)``, per channel on ``(N, C, H, W)``.

STUB — to be implemented (see the docstrings for the contract).
"""

import numpy as np

__all__ = ["batchnorm_forward", "batchnorm_inference", "batchnorm_backward"]


def batchnorm_forward(x, gamma, beta, eps=1e-6):
    """Training-mode batch norm.

    ``x`` is ``(N, D)`` (statistics per feature, over axis 0) or ``(N, C, H, W)``
    (statistics per channel, over axes 0, 2, 3). ``gamma``/``beta`` have shape ``(D,)`` or
    ``(C,)``. Returns ``(out, xn, mean, var, std)``: ``out`` and ``xn`` (the normalised
    input) shaped like ``x``; ``mean``, ``var`` (biased) and ``std = sqrt(var + eps)``
    shaped ``(D,)``/``(C,)``. Dtype: the promotion of x, gamma, beta (float32 or float64).
    """
    raise NotImplementedError


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-6):
    """Inference-mode batch norm with given statistics; returns ``out`` shaped like ``x``."""
    raise NotImplementedError


def batchnorm_backward(dout, xn, std, gamma):
    """Gradients of training-mode batch norm.

    ``dout`` and ``xn`` shaped like the forward ``x``; ``std`` and ``gamma`` ``(D,)``/``(C,)``.
    Returns ``(dx, dgamma, dbeta)``.
    """
    raise NotImplementedError
