"""Unfolding images into window columns (im2col) and folding them back (col2im).

Two layouts are provided:

* the book's layout, ``(N*out_h*out_w, C*filter_h*filter_w)`` with rows (n, oy, ox) and
  columns (c, ky, kx): :func:`im2col` / :func:`col2im`, drop-in for the reference;
* a per-sample layout, ``(N, C*filter_h*filter_w, out_h*out_w)``:
  :func:`im2col_per_sample` / :func:`col2im_per_sample`. One matrix product per sample,
  ``W.reshape(FN, -1) @ cols[n]``, then yields ``(FN, out_h*out_w)``, which is already
  NCHW order, so a convolution needs no transpose.

Every function keeps the input's float dtype (float32 or float64); other real dtypes are
converted as NumPy would (integers and bools to float64).
"""

import dataclasses

import numpy as np

from ..registry import example, examples
from ..runtime.jit import inner_function, threaded_kernel
from ..runtime.partition import channel_blocks, run_shares
from ..validation import (
    as_float_array,
    check_input_shape,
    check_int,
    checked_out,
    empty_result,
    window_output_size,
)
from . import _examples

__all__ = [
    "Geometry",
    "conv_output_shape",
    "im2col",
    "col2im",
    "im2col_per_sample",
    "col2im_per_sample",
]


# ------------------------------------------------------------------ kernels
# Inner loops index with unsigned integers: Numba checks every signed index for a negative
# value to wrap around, and that branch keeps LLVM from vectorising (col2im up to 4x slower).
@inner_function(inline=True)
def _inside_range(out_w, stride, offset, width):
    """``(lo, hi)``: the outputs ``ox`` in ``[lo, hi)`` read ``ox*stride + offset`` inside
    ``[0, width)``; the others read padding."""
    lo = 0
    while lo < out_w and lo * stride + offset < 0:
        lo += 1
    hi = out_w
    while hi > lo and (hi - 1) * stride + offset >= width:
        hi -= 1
    return lo, hi


@threaded_kernel()
def _im2col_rows_kernel(x, filter_h, filter_w, stride, pad, out_h, out_w, col, first, last):
    """Fill the book's column matrix one output row (n, oy) per iteration: its ``out_w``
    rows of ``col`` form a block that stays in cache while every tap column is written."""
    n_img, channels, height, width = x.shape
    ksize = filter_h * filter_w
    for row_block in range(first, last):
        rb = np.int64(row_block)
        n = rb // out_h
        oy = rb - n * out_h
        block = col[rb * out_w : (rb + 1) * out_w]
        for kx in range(filter_w):
            lo, hi = _inside_range(out_w, stride, kx - pad, width)
            shift = kx - pad
            for c in range(channels):
                for ky in range(filter_h):
                    j = c * ksize + ky * filter_w + kx
                    y = oy * stride + ky - pad
                    if y < 0 or y >= height:
                        for ox in range(out_w):
                            block[ox, j] = 0.0
                        continue
                    line = x[n, c, y]
                    for ox in range(lo):
                        block[ox, j] = 0.0
                    for ox in range(lo, hi):
                        block[np.uint64(ox), np.uint64(j)] = line[np.uint64(ox * stride + shift)]
                    for ox in range(hi, out_w):
                        block[ox, j] = 0.0


@threaded_kernel()
def _col2im_rows_kernel(
    col, filter_h, filter_w, stride, pad, out_h, out_w, img, channel_block, first, last
):
    # Items are (sample, block of channels). Output rows come outermost so that each row of
    # ``col`` is read from memory once, while its sample's planes stay in cache.
    n_img, channels, height, width = img.shape
    ksize = filter_h * filter_w
    blocks = (channels + channel_block - 1) // channel_block
    inside = np.empty((filter_w, 2), np.int64)
    for kx in range(filter_w):
        inside[kx, 0], inside[kx, 1] = _inside_range(out_w, stride, kx - pad, width)
    for item in range(first, last):
        i = np.int64(item)
        n = i // blocks
        c0 = (i - n * blocks) * channel_block
        c1 = min(c0 + channel_block, channels)
        for c in range(c0, c1):
            for y in range(height):
                for xx in range(width):
                    img[n, c, y, xx] = 0.0
        for oy in range(out_h):
            row0 = np.uint64((n * out_h + oy) * out_w)
            for c in range(c0, c1):
                base = c * ksize
                for ky in range(filter_h):
                    y = oy * stride + ky - pad
                    if y < 0 or y >= height:
                        continue
                    for kx in range(filter_w):
                        k = np.uint64(base + ky * filter_w + kx)
                        offset = kx - pad
                        for ox in range(inside[kx, 0], inside[kx, 1]):
                            img[n, c, y, np.uint64(ox * stride + offset)] += col[
                                row0 + np.uint64(ox), k
                            ]


@inner_function
def _copy_shifted_plane(xf, cf, src0, dst0, row_shift, shift, lo, hi, height, out_h, out_w):
    """One tap's row of the columns when stride is 1 and out_w equals the width: output
    (oy, ox) reads input (oy + row_shift, ox + shift), so the valid rows are one contiguous
    copy at a fixed offset; the few cells it fills from a neighbouring row (the padded
    edges, columns outside [lo, hi)) are zeroed afterwards."""
    oy_lo = min(out_h, max(0, -row_shift))
    oy_hi = max(oy_lo, min(out_h, height - row_shift))
    for j in range(dst0, dst0 + oy_lo * out_w):
        cf[np.uint64(j)] = 0.0
    for j in range(dst0 + oy_hi * out_w, dst0 + out_h * out_w):
        cf[np.uint64(j)] = 0.0
    if oy_hi > oy_lo and hi > lo:
        offset = src0 + row_shift * out_w + shift - dst0  # out_w is the input width here
        start = dst0 + oy_lo * out_w + lo
        stop = dst0 + (oy_hi - 1) * out_w + hi
        for j in range(start, stop):
            cf[np.uint64(j)] = xf[np.uint64(j + offset)]
    for oy in range(oy_lo, oy_hi):
        d = dst0 + oy * out_w
        for ox in range(lo):
            cf[np.uint64(d + ox)] = 0.0
        for ox in range(hi, out_w):
            cf[np.uint64(d + ox)] = 0.0


@inner_function(inline=True)
def _padded_rows(stride, pad, width, out_w):
    """Whether a plane's taps are best copied row by row from a zero-padded copy of it: at
    stride 1 with padding, unless the output is as wide as a plane wider than 8 (then one
    shifted copy per tap, :func:`_copy_shifted_plane`, is faster)."""
    return stride == 1 and pad > 0 and (out_w != width or width <= 8)


@inner_function
def _unfold_padded(xf, src0, cf, row0, filter_h, filter_w, pad, height, width, out_h, out_w):
    """:func:`_unfold_plane` at stride 1: the plane is copied into a zero-padded buffer, so
    every output row of a tap is one contiguous run with no edge to fill."""
    padded_w = width + 2 * pad
    buf = np.zeros((height + 2 * pad) * padded_w, xf.dtype)
    for y in range(height):
        s = src0 + y * width
        d = (y + pad) * padded_w + pad
        for xx in range(width):
            buf[np.uint64(d + xx)] = xf[np.uint64(s + xx)]
    n_out = out_h * out_w
    for ky in range(filter_h):
        for kx in range(filter_w):
            dst0 = row0 + (ky * filter_w + kx) * n_out
            for oy in range(out_h):
                s = (oy + ky) * padded_w + kx
                d = dst0 + oy * out_w
                for ox in range(out_w):
                    cf[np.uint64(d + ox)] = buf[np.uint64(s + ox)]


@inner_function
def _fold_padded(cf, row0, gf, dst0, filter_h, filter_w, pad, height, width, out_h, out_w):
    """:func:`_fold_plane` at stride 1: the taps are summed into a zero-padded buffer (in
    the same order as :func:`_fold_plane`, so to the same bits), whose inside is the plane."""
    padded_w = width + 2 * pad
    buf = np.zeros((height + 2 * pad) * padded_w, cf.dtype)
    n_out = out_h * out_w
    for ky in range(filter_h):
        for kx in range(filter_w):
            src0 = row0 + (ky * filter_w + kx) * n_out
            for oy in range(out_h):
                s = src0 + oy * out_w
                d = (oy + ky) * padded_w + kx
                for ox in range(out_w):
                    buf[np.uint64(d + ox)] += cf[np.uint64(s + ox)]
    for y in range(height):
        s = (y + pad) * padded_w + pad
        d = dst0 + y * width
        for xx in range(width):
            gf[np.uint64(d + xx)] = buf[np.uint64(s + xx)]


@inner_function
def _unfold_plane(xf, src0, cf, row0, filter_h, filter_w, stride, pad, height, width, out_h, out_w):
    """Write the ``filter_h*filter_w`` column rows of one input plane: the plane starts at
    flat index ``src0`` of ``xf``, its rows (ky, kx) of ``out_h*out_w`` cells at flat index
    ``row0`` of ``cf``. Flat indices, so that a short output row costs no array views (2x
    faster than row views on 8-16 pixel wide images)."""
    if _padded_rows(stride, pad, width, out_w):
        _unfold_padded(xf, src0, cf, row0, filter_h, filter_w, pad, height, width, out_h, out_w)
        return
    n_out = out_h * out_w
    same_width = stride == 1 and out_w == width
    for ky in range(filter_h):
        for kx in range(filter_w):
            dst0 = row0 + (ky * filter_w + kx) * n_out
            lo, hi = _inside_range(out_w, stride, kx - pad, width)
            shift = kx - pad
            if same_width:
                _copy_shifted_plane(
                    xf, cf, src0, dst0, ky - pad, shift, lo, hi, height, out_h, out_w
                )
                continue
            for oy in range(out_h):
                y = oy * stride + ky - pad
                d = dst0 + oy * out_w
                if y < 0 or y >= height:
                    for ox in range(out_w):
                        cf[np.uint64(d + ox)] = 0.0
                    continue
                s = src0 + y * width + shift
                for ox in range(lo):
                    cf[np.uint64(d + ox)] = 0.0
                if stride == 1:
                    for ox in range(lo, hi):
                        cf[np.uint64(d + ox)] = xf[np.uint64(s + ox)]
                else:
                    for ox in range(lo, hi):
                        cf[np.uint64(d + ox)] = xf[np.uint64(s + ox * stride)]
                for ox in range(hi, out_w):
                    cf[np.uint64(d + ox)] = 0.0


@inner_function
def _fold_plane(cf, row0, gf, dst0, filter_h, filter_w, stride, pad, height, width, out_h, out_w):
    """The adjoint of :func:`_unfold_plane`: set the plane at flat index ``dst0`` of ``gf``
    to the sum of the column rows at ``row0`` of ``cf`` over every window (taps summed in
    a fixed order)."""
    if _padded_rows(stride, pad, width, out_w):
        _fold_padded(cf, row0, gf, dst0, filter_h, filter_w, pad, height, width, out_h, out_w)
        return
    n_out = out_h * out_w
    for i in range(height * width):
        gf[np.uint64(dst0 + i)] = 0.0
    for ky in range(filter_h):
        for kx in range(filter_w):
            src0 = row0 + (ky * filter_w + kx) * n_out
            lo, hi = _inside_range(out_w, stride, kx - pad, width)
            shift = kx - pad
            for oy in range(out_h):
                y = oy * stride + ky - pad
                if y < 0 or y >= height:
                    continue
                d = dst0 + y * width + shift
                s = src0 + oy * out_w
                if stride == 1:  # unit stride: a contiguous run LLVM can vectorise
                    for ox in range(lo, hi):
                        gf[np.uint64(d + ox)] += cf[np.uint64(s + ox)]
                else:
                    for ox in range(lo, hi):
                        gf[np.uint64(d + ox * stride)] += cf[np.uint64(s + ox)]


@threaded_kernel()
def _im2col_per_sample_kernel(x, filter_h, filter_w, stride, pad, out_h, out_w, cols, first, last):
    """One (n, c) input plane per iteration."""
    n_img, channels, height, width = x.shape
    rows_per_plane = filter_h * filter_w * out_h * out_w
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    for plane in range(first, last):
        p = np.int64(plane)
        _unfold_plane(
            xf,
            p * height * width,
            cf,
            p * rows_per_plane,
            filter_h,
            filter_w,
            stride,
            pad,
            height,
            width,
            out_h,
            out_w,
        )


@threaded_kernel()
def _col2im_per_sample_kernel(
    cols, filter_h, filter_w, stride, pad, out_h, out_w, img, first, last
):
    """One (n, c) output plane per iteration (so no two iterations add into the same
    cell)."""
    n_img, channels, height, width = img.shape
    rows_per_plane = filter_h * filter_w * out_h * out_w
    cf = cols.reshape(-1)
    gf = img.reshape(-1)
    for plane in range(first, last):
        p = np.int64(plane)
        _fold_plane(
            cf,
            p * rows_per_plane,
            gf,
            p * height * width,
            filter_h,
            filter_w,
            stride,
            pad,
            height,
            width,
            out_h,
            out_w,
        )


# ------------------------------------------------------------------ wrappers
def conv_output_shape(input_shape, filter_h, filter_w, stride=1, pad=0):
    """Validate window arguments for an ``(N, C, H, W)`` input; return ``(out_h, out_w)``.

    Raises ``TypeError`` for non-integer sizes and ``ValueError`` for ``filter_h < 1``,
    ``stride < 1``, ``pad < 0`` or a window larger than the padded input.
    """
    filter_h = check_int(filter_h, "filter_h", minimum=1)
    filter_w = check_int(filter_w, "filter_w", minimum=1)
    stride = check_int(stride, "stride", minimum=1)
    pad = check_int(pad, "pad", minimum=0)
    height = check_int(input_shape[2], "input height", minimum=0)
    width = check_int(input_shape[3], "input width", minimum=0)
    out_h = window_output_size(height, filter_h, stride, pad, "input height", "filter_h")
    out_w = window_output_size(width, filter_w, stride, pad, "input width", "filter_w")
    return out_h, out_w


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A convolution's window: filter size, stride, padding and output size (Python ints)."""

    filter_h: int
    filter_w: int
    stride: int
    pad: int
    out_h: int
    out_w: int

    @classmethod
    def of(cls, input_shape, filter_h, filter_w, stride=1, pad=0):
        """The geometry of a window over ``input_shape`` ``(N, C, H, W)``, validated as by
        :func:`conv_output_shape`."""
        out_h, out_w = conv_output_shape(input_shape, filter_h, filter_w, stride, pad)
        return cls(int(filter_h), int(filter_w), int(stride), int(pad), out_h, out_w)


def _checked_window_args(shape, filter_h, filter_w, stride, pad):
    return dataclasses.astuple(Geometry.of(shape, filter_h, filter_w, stride, pad))


@examples(lambda dtype: [example(_examples.image(dtype), 3, 2, 2, 1)], group="im2col/col2im")
def im2col(x, filter_h, filter_w, stride=1, pad=0):
    """Unfold ``x`` ``(N, C, H, W)`` into the book's column matrix.

    Returns a C-contiguous ``(N*out_h*out_w, C*filter_h*filter_w)`` array of ``x``'s float
    dtype, rows ordered (n, oy, ox), columns (c, ky, kx); padded cells are zero.
    """
    x = as_float_array(x, "x", ndim=4)
    fh, fw, s, p, out_h, out_w = _checked_window_args(x.shape, filter_h, filter_w, stride, pad)
    n_img, channels = x.shape[:2]
    col = empty_result((n_img * out_h * out_w, channels * fh * fw), x.dtype)
    if col.size:
        run_shares(_im2col_rows_kernel, n_img * out_h, col.size, x, fh, fw, s, p, out_h, out_w, col)
    return col


@examples(
    lambda dtype: [
        example(_examples.rand((3 * 5 * 4, 5 * 3 * 2), dtype), _examples.IMAGE, 3, 2, 2, 1)
    ],
    group="im2col/col2im",
)
def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Fold the book's column matrix back into ``input_shape`` ``(N, C, H, W)``.

    ``col`` must have shape ``(N*out_h*out_w, C*filter_h*filter_w)`` (or any shape with
    that many elements in that order, as the reference accepts). Overlapping windows are
    summed. Returns a new C-contiguous array of ``col``'s float dtype.
    """
    shape = check_input_shape(input_shape)
    col = as_float_array(col, "col")
    fh, fw, s, p, out_h, out_w = _checked_window_args(shape, filter_h, filter_w, stride, pad)
    n_img, channels = shape[:2]
    rows, width = n_img * out_h * out_w, channels * fh * fw
    if col.size != rows * width:
        raise ValueError(
            f"col must have shape ({rows}, {width}) for input_shape={shape}, "
            f"filter {fh}x{fw}, stride={s}, pad={p}; got {col.shape}"
        )
    col = col.reshape(rows, width)
    img = empty_result(shape, col.dtype)
    if img.size:
        block, items = channel_blocks(n_img, channels)
        run_shares(
            _col2im_rows_kernel, items, col.size, col, fh, fw, s, p, out_h, out_w, img, block
        )
    return img


@examples(
    lambda dtype: [example(_examples.image(dtype), 2, 3, 1, 2)],
    group="im2col/col2im per sample",
)
def im2col_per_sample(x, filter_h, filter_w, stride=1, pad=0, out=None):
    """Unfold ``x`` ``(N, C, H, W)`` into per-sample columns.

    The result is ``(N, C*filter_h*filter_w, out_h*out_w)``.

    Row ``c*filter_h*filter_w + ky*filter_w + kx`` of sample ``n`` holds, for every output
    position ``oy*out_w + ox``, the input value under that filter tap (zero in padding).
    ``out``, if given, must be a writeable C-contiguous array of that shape and ``x``'s
    dtype that shares no memory with ``x``; it is filled and returned (this lets callers
    reuse a workspace).
    """
    x = as_float_array(x, "x", ndim=4)
    fh, fw, s, p, out_h, out_w = _checked_window_args(x.shape, filter_h, filter_w, stride, pad)
    n_img, channels = x.shape[:2]
    shape = (n_img, channels * fh * fw, out_h * out_w)
    out = checked_out(out, shape, x.dtype, inputs=(x,))
    if out.size:
        run_shares(
            _im2col_per_sample_kernel,
            n_img * channels,
            out.size,
            x,
            fh,
            fw,
            s,
            p,
            out_h,
            out_w,
            out,
        )
    return out


@examples(
    lambda dtype: [
        example(_examples.rand((3, 5 * 2 * 3, 12 * 9), dtype), _examples.IMAGE, 2, 3, 1, 2)
    ],
    group="im2col/col2im per sample",
)
def col2im_per_sample(cols, input_shape, filter_h, filter_w, stride=1, pad=0, out=None):
    """Fold per-sample columns ``(N, C*filter_h*filter_w, out_h*out_w)`` back into ``input_shape``.

    The adjoint of :func:`im2col_per_sample`: overlapping windows are summed, padding is
    dropped. Returns a new C-contiguous ``(N, C, H, W)`` array of ``cols``' float dtype, or
    fills and returns ``out`` (a writeable C-contiguous array of that shape and dtype that
    shares no memory with ``cols``).
    """
    shape = check_input_shape(input_shape)
    cols = as_float_array(cols, "cols", ndim=3)
    fh, fw, s, p, out_h, out_w = _checked_window_args(shape, filter_h, filter_w, stride, pad)
    n_img, channels = shape[:2]
    want = (n_img, channels * fh * fw, out_h * out_w)
    if cols.shape != want:
        raise ValueError(
            f"cols must have shape {want} for input_shape={shape}, filter {fh}x{fw}, "
            f"stride={s}, pad={p}; got {cols.shape}"
        )
    img = checked_out(out, shape, cols.dtype, inputs=(cols,))
    if img.size:
        run_shares(
            _col2im_per_sample_kernel,
            n_img * channels,
            cols.size,
            cols,
            fh,
            fw,
            s,
            p,
            out_h,
            out_w,
            img,
        )
    return img
