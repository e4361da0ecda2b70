"""Numba-JIT kernels for the convolution/pooling/batch-norm hot path.

Pure functions on arrays: each public function validates its arguments, normalises dtype
and memory layout (C-contiguous float32 or float64) and calls a private parallel kernel.
Importing changes nothing in the process: the runtime (threading layer, fork safety) is
prepared at the first parallel kernel launch (:mod:`nnkernels.runtime`,
:func:`show_config`).
"""

from . import _compat  # noqa: F401 - first: an untested Numba raises ImportError here
from ._precompile import precompile
from .activations import relu_backward, relu_forward
from .batchnorm import (
    batchnorm_backward,
    batchnorm_backward_from_input,
    batchnorm_forward,
    batchnorm_inference,
)
from .columns import col2im, col2im_per_sample, conv_output_shape, im2col, im2col_per_sample
from .config import config_context, get_config, set_config
from .convolution import conv_backward, conv_forward, conv_kernels_available
from .pooling import maxpool_backward, maxpool_forward
from .runtime import runtime_info, show_config
from .threads import get_num_threads, set_num_threads, threading_layer

__all__ = [
    "conv_output_shape",
    "im2col",
    "col2im",
    "im2col_per_sample",
    "col2im_per_sample",
    "conv_forward",
    "conv_backward",
    "conv_kernels_available",
    "relu_forward",
    "relu_backward",
    "maxpool_forward",
    "maxpool_backward",
    "batchnorm_forward",
    "batchnorm_inference",
    "batchnorm_backward",
    "batchnorm_backward_from_input",
    "set_num_threads",
    "get_num_threads",
    "threading_layer",
    "precompile",
    "get_config",
    "set_config",
    "config_context",
    "show_config",
    "runtime_info",
]

__version__ = "0.1.0"
