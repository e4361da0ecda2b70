"""ReLU forward (output and mask in one pass) and backward, on arrays of any shape."""

import numpy as np

from ..registry import example, examples
from ..runtime.jit import inner_function, threaded_kernel
from ..runtime.partition import run_shares
from ..validation import as_float_array, check_shape
from . import _examples

__all__ = ["relu_forward", "relu_backward"]

_BLOCK = 4096


# Indices are unsigned in the inner loops: Numba checks every signed index for a negative
# value to wrap around, and that branch keeps LLVM from vectorising the loop (2-3x slower).
@inner_function(inline=True)
def _blocks(n):
    """Number of ``_BLOCK``-element blocks covering ``n`` elements (unsigned)."""
    return (np.uint64(n) + np.uint64(_BLOCK - 1)) // np.uint64(_BLOCK)


@inner_function(inline=True)
def _block_range(block, n):
    """``range`` over the unsigned indices of block ``block`` of ``n`` elements."""
    start = np.uint64(block) * np.uint64(_BLOCK)
    return range(start, min(start + np.uint64(_BLOCK), np.uint64(n)))


@threaded_kernel()
def _relu_forward_kernel(x, out, mask, lo, hi):
    """Blocks ``lo <= block < hi`` of the flat arrays."""
    for block in range(lo, hi):
        for i in _block_range(block, x.size):
            v = x[i]
            m = v <= 0
            mask[i] = m
            out[i] = 0.0 if m else v


@threaded_kernel()
def _relu_backward_kernel(dout, mask, dx, lo, hi):
    """Blocks ``lo <= block < hi`` of the flat arrays."""
    for block in range(lo, hi):
        for i in _block_range(block, dout.size):
            dx[i] = 0.0 if mask[i] else dout[i]


@examples(lambda dtype: [example(_examples.image(dtype))], group="relu")
def relu_forward(x):
    """``(out, mask)`` for ``x`` of any shape: ``mask = x <= 0``, ``out = where(mask, 0, x)``.

    ``out`` keeps ``x``'s float dtype (integers and bools become float64); NaN is not
    masked (``NaN <= 0`` is false), so it propagates.
    """
    x = as_float_array(x, "x")
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    if x.size:
        flat = (x.reshape(-1), out.reshape(-1), mask.reshape(-1))
        run_shares(_relu_forward_kernel, int(_blocks(x.size)), x.size, *flat)
    return out, mask


@examples(
    lambda dtype: [example(_examples.image(dtype), _examples.image(dtype, 1) > 0.3)], group="relu"
)
def relu_backward(dout, mask):
    """``where(mask, 0, dout)``: the gradient through a ReLU whose forward gave ``mask``."""
    dout = as_float_array(dout, "dout")
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    check_shape(dout, "dout", mask.shape)
    mask = np.ascontiguousarray(mask)
    dx = np.empty_like(dout)
    if dx.size:
        flat = (dout.reshape(-1), mask.reshape(-1), dx.reshape(-1))
        run_shares(_relu_backward_kernel, int(_blocks(dx.size)), dx.size, *flat)
    return dx
