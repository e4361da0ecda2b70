"""The reference's ``common.util`` helpers, backed by the JIT kernels."""

import numpy as np

import nnkernels

__all__ = ["im2col", "col2im", "conv_output_size"]


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """``(N, C, H, W)`` -> ``(N*out_h*out_w, C*filter_h*filter_w)``.

    Rows are ordered (n, oy, ox), columns (c, ky, kx).

    Unlike the reference, the result keeps the input's float dtype (float32 stays float32).
    """
    nnkernels.compute_dtype(input_data, names=("input_data",))  # names it if not real numeric
    if np.ndim(input_data) != 4:
        raise ValueError(f"input_data must be 4-D (N, C, H, W), got shape {np.shape(input_data)}")
    return nnkernels.im2col(input_data, filter_h, filter_w, stride, pad)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Inverse layout of :func:`im2col`, summing overlapping windows; returns ``input_shape``."""
    return nnkernels.col2im(col, input_shape, filter_h, filter_w, stride, pad)


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """``(input_size + 2*pad - filter_size)//stride + 1`` as an int (the reference returns a float).

    Raises ``ValueError`` when the filter does not fit or sizes are out of range.
    """
    out_h, _ = nnkernels.conv_output_shape((1, 1, input_size, 1), filter_size, 1, stride, pad)
    return out_h
