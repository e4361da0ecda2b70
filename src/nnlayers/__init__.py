"""Drop-in fast replacements for the "Deep Learning from Scratch" NumPy layers.

``from nnlayers import *`` gives every name a script gets from the reference's
``from common.layers import *`` (including ``np``, which the reference module leaks), so
switching a script's import line is enough. The pure-NumPy originals live in
:mod:`nnlayers.reference`.
"""

import numpy as np

from nnkernels import get_num_threads, set_num_threads

from .config import get_workspace_limit, set_workspace_limit
from .functions import (
    cross_entropy_error,
    identity_function,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_loss,
    step_function,
    sum_squared_error,
)
from .gradient import numerical_gradient
from .layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from .util import col2im, conv_output_size, im2col

__all__ = [
    "np",
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
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
    "im2col",
    "col2im",
    "conv_output_size",
    "numerical_gradient",
    "set_num_threads",
    "get_num_threads",
    "set_workspace_limit",
    "get_workspace_limit",
]
