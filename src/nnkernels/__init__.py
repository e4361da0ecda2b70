"""Numba-JIT kernels for the convolution/pooling/batch-norm hot path.

Pure functions on arrays: each public function validates its arguments, normalises dtype
and memory layout (C-contiguous float32 or float64) and runs single-threaded kernels on
shares of the work over the library's own threads; matrix products run on the library's
own BLAS. :class:`ConvolutionEngine` holds a convolution's two passes. Importing changes
nothing in the process: the runtime (helper threads, the library's BLAS, fork hooks) is
prepared when first needed (:func:`show_config`).

This namespace is the public API; the subpackages (``runtime``, ``kernels``, ``engine``)
are the implementation.
"""

from . import _compat  # noqa: F401 - first: an untested Numba raises ImportError here
from ._precompile import kernel_groups, precompile
from .config import CONV_ROUTES, config_context, get_config, set_config
from .engine.convolution import ConvolutionEngine
from .kernels.activations import relu_backward, relu_forward
from .kernels.batchnorm import (
    batchnorm_backward,
    batchnorm_backward_from_input,
    batchnorm_forward,
    batchnorm_inference,
)
from .kernels.columns import (
    Geometry,
    col2im,
    col2im_per_sample,
    conv_output_shape,
    im2col,
    im2col_per_sample,
)
from .kernels.convolution import conv_backward, conv_forward, conv_kernels_available
from .kernels.pooling import maxpool_backward, maxpool_forward
from .kernels.products import matmul
from .report import runtime_info, show_config
from .runtime.partition import get_num_threads, set_num_threads, threading_layer
from .validation import compute_dtype, real_array

__all__ = [
    "conv_output_shape",
    "Geometry",
    "im2col",
    "col2im",
    "im2col_per_sample",
    "col2im_per_sample",
    "conv_forward",
    "conv_backward",
    "conv_kernels_available",
    "ConvolutionEngine",
    "CONV_ROUTES",
    "matmul",
    "relu_forward",
    "relu_backward",
    "maxpool_forward",
    "maxpool_backward",
    "batchnorm_forward",
    "batchnorm_inference",
    "batchnorm_backward",
    "batchnorm_backward_from_input",
    "compute_dtype",
    "real_array",
    "set_num_threads",
    "get_num_threads",
    "threading_layer",
    "precompile",
    "kernel_groups",
    "get_config",
    "set_config",
    "config_context",
    "show_config",
    "runtime_info",
]

__version__ = "0.1.0"
