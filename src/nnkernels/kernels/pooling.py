"""Max pooling: forward with the argmax of each window, backward scattering to it.

Both kernels take a range of the ``N*C`` image planes, shared over the library's threads;
every plane is read and written by one call only, so there are no races and the result
does not depend on the shares. Padding cells are not candidates: a window's maximum is
taken over its cells that lie inside the image (``pad < pool`` guarantees there is at
least one).
"""

import functools

import numpy as np

from ..registry import example, examples
from ..runtime.jit import threaded_kernel
from ..runtime.partition import run_shares
from ..validation import (
    as_float_array,
    check_input_shape,
    check_int,
    check_shape,
    empty_result,
    window_output_size,
)
from . import _examples

__all__ = ["maxpool_forward", "maxpool_backward"]


# ------------------------------------------------------------------ kernels
# The kernels take the flattened arrays (never sharing memory: ``noalias``) and index them
# with uint64 (never negative): Numba then drops its negative-index wraparound. Both are
# what lets LLVM vectorise the interior loop.


@functools.cache
def _forward_kernel(pool_h, pool_w, stride):
    """The forward kernel with the window and stride as compile-time constants.

    Constant bounds let LLVM unroll the window and vectorise over output columns; each
    (pool_h, pool_w, stride) compiles once and is cached on disk like any kernel.
    """

    @threaded_kernel(noalias=True)
    def kernel(xf, height, width, pad, of, af, out_h, out_w, lo, hi):
        """Planes ``lo <= plane < hi``."""
        # outputs whose window lies entirely inside the image
        oy_lo = min(out_h, (pad + stride - 1) // stride)
        oy_hi = max(oy_lo, min(out_h, (height + pad - pool_h) // stride + 1))
        ox_lo = min(out_w, (pad + stride - 1) // stride)
        ox_hi = max(ox_lo, min(out_w, (width + pad - pool_w) // stride + 1))
        for p in range(lo, hi):
            for oy in range(out_h):
                y0 = oy * stride - pad
                obase = (p * out_h + oy) * out_w
                ibase = (
                    p * height + y0
                ) * width - pad  # flat index of window cell (0, 0) at ox = 0
                if oy_lo <= oy < oy_hi:
                    for ox in range(ox_lo, ox_hi):
                        i0 = ibase + ox * stride
                        best = xf[np.uint64(i0)]
                        best_k = 0
                        for ky in range(pool_h):
                            for kx in range(pool_w):
                                v = xf[np.uint64(i0 + ky * width + kx)]
                                # np.argmax order: strictly greater wins; a first NaN wins
                                take = (v > best) | ((v != v) & (best == best))
                                best = v if take else best
                                best_k = (ky * pool_w + kx) if take else best_k
                        of[np.uint64(obase + ox)] = best
                        af[np.uint64(obase + ox)] = best_k
                    ky_lo = 0
                    ky_hi = pool_h
                    left_end = ox_lo
                    right_start = ox_hi
                else:
                    ky_lo = max(0, -y0)
                    ky_hi = min(pool_h, height - y0)
                    left_end = out_w
                    right_start = out_w
                # border outputs: ox in [0, left_end) and [right_start, out_w), window clipped
                for j in range(left_end + out_w - right_start):
                    ox = j if j < left_end else right_start + (j - left_end)
                    x0 = ox * stride - pad
                    kx_lo = max(0, -x0)
                    kx_hi = min(pool_w, width - x0)
                    i0 = ibase + ox * stride
                    best = xf[np.uint64(i0 + ky_lo * width + kx_lo)]
                    best_k = ky_lo * pool_w + kx_lo
                    for ky in range(ky_lo, ky_hi):
                        for kx in range(kx_lo, kx_hi):
                            v = xf[np.uint64(i0 + ky * width + kx)]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            best_k = (ky * pool_w + kx) if take else best_k
                    of[np.uint64(obase + ox)] = best
                    af[np.uint64(obase + ox)] = best_k

    return kernel


@functools.cache
def _backward_kernel(pool_w, stride):
    """The backward kernel with ``pool_w`` and the stride as compile-time constants."""

    @threaded_kernel(noalias=True)
    def kernel(df, af, out_h, out_w, pad, gf, height, width, lo, hi):
        """Planes ``lo <= plane < hi``."""
        plane_size = height * width
        for p in range(lo, hi):
            g0 = p * plane_size
            for i in range(plane_size):
                gf[np.uint64(g0 + i)] = 0.0
            for oy in range(out_h):
                y0 = oy * stride - pad
                obase = (p * out_h + oy) * out_w
                for ox in range(out_w):
                    k = af[np.uint64(obase + ox)]
                    ky = k // pool_w
                    y = y0 + ky
                    xx = ox * stride - pad + (k - ky * pool_w)
                    # only false with pad > 0 and an argmax pointing into padding
                    if 0 <= y < height and 0 <= xx < width:
                        gf[np.uint64(g0 + y * width + xx)] += df[np.uint64(obase + ox)]

    return kernel


# ------------------------------------------------------------------ wrappers
def _pool_geometry(shape, pool_h, pool_w, stride, pad):
    """Validate the window arguments for input ``shape``; return ints and the output size."""
    pool_h = check_int(pool_h, "pool_h", minimum=1)
    pool_w = check_int(pool_w, "pool_w", minimum=1)
    stride = check_int(stride, "stride", minimum=1)
    pad = check_int(pad, "pad", minimum=0)
    if pad >= pool_h or pad >= pool_w:
        raise ValueError(
            f"pad must be smaller than the window (pool_h={pool_h}, pool_w={pool_w}) so that "
            f"no window lies entirely in padding, got pad={pad}"
        )
    height, width = shape[2], shape[3]
    if (height == 0 or width == 0) and pad > 0:
        raise ValueError(
            f"an input of height {height} and width {width} with pad={pad} would give windows "
            f"lying entirely in padding"
        )
    out_h = window_output_size(height, pool_h, stride, pad, "input height", "pool_h")
    out_w = window_output_size(width, pool_w, stride, pad, "input width", "pool_w")
    return pool_h, pool_w, stride, pad, out_h, out_w


@examples(lambda dtype: [example(_examples.image(dtype), 2, 2, 2, 1)], group="max pooling")
def maxpool_forward(x, pool_h, pool_w, stride=1, pad=0):
    """Max over each ``pool_h x pool_w`` window of ``x`` ``(N, C, H, W)``.

    Returns ``(out, argmax)``: ``out`` ``(N, C, out_h, out_w)`` of ``x``'s float dtype,
    ``argmax`` ``(N, C, out_h, out_w)`` int64, the winner's index ``ky*pool_w + kx`` inside
    its window. ``out_h = (H + 2*pad - pool_h)//stride + 1``. Padded cells never win;
    ``pad`` must be smaller than the window. Ties: the first maximum in row-major window
    order wins; a NaN counts as the maximum (as ``np.argmax``/``np.max`` do).
    """
    x = as_float_array(x, "x", ndim=4)
    ph, pw, s, p, out_h, out_w = _pool_geometry(x.shape, pool_h, pool_w, stride, pad)
    n_img, channels = x.shape[:2]
    out = empty_result((n_img, channels, out_h, out_w), x.dtype)
    argmax = empty_result((n_img, channels, out_h, out_w), dtype=np.int64)
    if out.size:
        flat = (x.reshape(-1), *x.shape[2:], p, out.reshape(-1), argmax.reshape(-1), out_h, out_w)
        run_shares(_forward_kernel(ph, pw, s), n_img * channels, x.size, *flat)
    return out, argmax


@examples(
    lambda dtype: [
        example(
            _examples.rand((3, 5, 5, 4), dtype),
            np.arange(300).reshape(3, 5, 5, 4) % 4,
            _examples.IMAGE,
            2,
            2,
            2,
            1,
        )
    ],
    group="max pooling",
)
def maxpool_backward(dout, argmax, input_shape, pool_h, pool_w, stride=1, pad=0):
    """Scatter ``dout`` ``(N, C, out_h, out_w)`` to the argmax cells; return ``(N, C, H, W)``.

    Overlapping windows (``stride < pool``) add up. Result dtype: ``dout``'s float dtype.
    ``argmax`` is the forward's (any integer dtype, values in ``[0, pool_h*pool_w)``);
    an index that points into padding (which the forward never produces) contributes
    nothing. The result is a new C-contiguous array.
    """
    shape = check_input_shape(input_shape)
    ph, pw, s, p, out_h, out_w = _pool_geometry(shape, pool_h, pool_w, stride, pad)
    dout = as_float_array(dout, "dout", ndim=4)
    want = (shape[0], shape[1], out_h, out_w)
    check_shape(dout, "dout", want)
    if not isinstance(argmax, np.ndarray):
        argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, got dtype {argmax.dtype}")
    check_shape(argmax, "argmax", want)
    if argmax.size:
        lo, hi = int(argmax.min()), int(argmax.max())
        if lo < 0 or hi >= ph * pw:
            raise ValueError(
                f"argmax values must lie in [0, pool_h*pool_w = {ph * pw}), got min {lo}, max {hi}"
            )
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    dx = empty_result(shape, dout.dtype)
    if dx.size:
        flat = (dout.reshape(-1), argmax.reshape(-1), out_h, out_w, p, dx.reshape(-1), *shape[2:])
        run_shares(_backward_kernel(pw, s), shape[0] * shape[1], dx.size, *flat)
    return dx
