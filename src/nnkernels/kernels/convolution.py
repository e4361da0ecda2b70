"""The fused convolution: forward and backward each one kernel per chunk of samples, with
the columns, the products and the folding done without returning to Python.

Each thread runs the GIL-free kernel on chunks of the samples, taking the next chunk when
done (:func:`nnkernels.runtime.partition.run_in_chunks`), and, for each sample, writes its
columns (``(C*FH*FW, out_h*out_w)``, the per-sample layout of
:func:`nnkernels.im2col_per_sample`) into a buffer that stays in cache, multiplies by
calling the library's own BLAS (:mod:`nnkernels.runtime.blas`, one thread per call) and
adds the bias, or in backward forms the sample's weight gradient and folds its input
gradient back. Each sample's results come from the same products whatever the thread
count.

Available where the library's BLAS is (:func:`conv_kernels_available`); elsewhere the
functions raise ``RuntimeError`` and callers use the column functions and a product.
"""

import numpy as np

from ..registry import example, examples
from ..runtime import blas
from ..runtime.blas import NO_TRANS, TRANS, gemm
from ..runtime.jit import threaded_kernel
from ..runtime.partition import get_num_threads, run_in_chunks
from ..validation import (
    as_float_array,
    check_int,
    check_ndim,
    checked_out,
    compute_dtype,
    empty_result,
)
from . import _examples, columns
from .columns import Geometry, _fold_plane, _unfold_plane, im2col_per_sample

__all__ = [
    "conv_kernels_available",
    "conv_forward",
    "conv_backward",
    "fused_forward",
    "fused_backward",
]


def conv_kernels_available():
    """Whether :func:`conv_forward` and :func:`conv_backward` can run in this process (the
    library's BLAS loaded); the first call loads it (``nnkernels.show_config()`` says why
    not, where not)."""
    return blas.available()


# ------------------------------------------------------------------ kernels
# Both kernels compile in the column code of columns.py and the BLAS binding of blas.py.
@threaded_kernel(also_reads=(columns, blas))
def _conv_forward_kernel(
    x, weights, bias, filter_h, filter_w, stride, pad, out_h, out_w, lo, hi, part, keep, cols, out
):
    """``out[n] = weights @ columns(x[n]) + bias`` for the samples ``lo <= n < hi``.

    x ``(N, C, H, W)``; weights ``(FN, K)`` with ``K = C*filter_h*filter_w``; bias ``(FN,)``;
    out ``(N, FN, P)`` with ``P = out_h*out_w``. cols is ``(N, K, P)`` and keeps every
    sample's columns when ``keep``, else ``(parts, K, P)``, one scratch matrix per part, of
    which this call uses ``cols[part]``.
    """
    channels, height, width = x.shape[1:]
    n_filters, k = weights.shape
    n_out = out_h * out_w
    rows_per_plane = filter_h * filter_w * n_out
    xf = x.reshape(-1)
    for n in range(lo, hi):
        sample_cols = cols[n if keep else part]
        cf = sample_cols.reshape(-1)
        for c in range(channels):
            _unfold_plane(
                xf,
                (n * channels + c) * height * width,
                cf,
                c * rows_per_plane,
                filter_h,
                filter_w,
                stride,
                pad,
                height,
                width,
                out_h,
                out_w,
            )
        result = out[n]
        gemm(
            NO_TRANS,
            NO_TRANS,
            n_filters,
            n_out,
            k,
            weights,
            k,
            sample_cols,
            n_out,
            result,
            n_out,
        )
        for f in range(n_filters):
            b = bias[f]
            for p in range(n_out):
                result[f, p] += b


@threaded_kernel(also_reads=(columns, blas))
def _conv_backward_kernel(
    x,
    weights,
    dout,
    filter_h,
    filter_w,
    stride,
    pad,
    out_h,
    out_w,
    lo,
    hi,
    part,
    kept,
    cols,
    dcols,
    dW_per_sample,
    dx,
):
    """For the samples ``lo <= n < hi``: ``dW_per_sample[n] = columns(x[n]) @ dout[n].T``
    and ``dx[n]`` the fold of ``weights.T @ dout[n]``.

    dout ``(N, FN, P)``; dW_per_sample ``(N, K, FN)``; dx ``(N, C, H, W)``; dcols
    ``(parts, K, P)`` scratch, of which this call uses ``dcols[part]``. cols holds every
    sample's columns ``(N, K, P)`` when ``kept`` (from forward), else it is
    ``(parts, K, P)`` scratch they are rebuilt in.
    """
    channels, height, width = x.shape[1:]
    n_filters, k = weights.shape
    n_out = out_h * out_w
    rows_per_plane = filter_h * filter_w * n_out
    xf = x.reshape(-1)
    gf = dx.reshape(-1)
    grad_cols = dcols[part]
    gcf = grad_cols.reshape(-1)
    for n in range(lo, hi):
        sample_cols = cols[n if kept else part]
        if not kept:
            cf = sample_cols.reshape(-1)
            for c in range(channels):
                _unfold_plane(
                    xf,
                    (n * channels + c) * height * width,
                    cf,
                    c * rows_per_plane,
                    filter_h,
                    filter_w,
                    stride,
                    pad,
                    height,
                    width,
                    out_h,
                    out_w,
                )
        d = dout[n]
        gemm(
            NO_TRANS,
            TRANS,
            k,
            n_filters,
            n_out,
            sample_cols,
            n_out,
            d,
            n_out,
            dW_per_sample[n],
            n_filters,
        )
        gemm(TRANS, NO_TRANS, k, n_out, n_filters, weights, k, d, n_out, grad_cols, n_out)
        for c in range(channels):
            _fold_plane(
                gcf,
                c * rows_per_plane,
                gf,
                (n * channels + c) * height * width,
                filter_h,
                filter_w,
                stride,
                pad,
                height,
                width,
                out_h,
                out_w,
            )


# ------------------------------------------------------------------ without checks
def fused_forward(x, weights, bias, g, n_parts, out, cols=None):
    """Fill ``out`` ``(N, FN, P)`` with the convolution of valid arguments: ``x``
    ``(N, C, H, W)`` and ``weights`` ``(FN, C*FH*FW)`` C-contiguous of one float dtype,
    ``bias`` ``(FN,)`` of it (not sharing memory with ``out`` or ``cols``), ``g`` a
    :class:`~nnkernels.kernels.columns.Geometry`. ``cols`` ``(N, K, P)``, if given, receives
    every sample's columns; else ``n_parts`` scratch matrices are used."""
    blas.require()
    n_img, k, n_out = x.shape[0], weights.shape[1], g.out_h * g.out_w
    keep = cols is not None
    if not keep:
        cols = empty_result((n_parts, k, n_out), x.dtype)
    if out.size and k == 0:  # no input channels: the sums are empty
        out[...] = bias[:, None]
    elif out.size:
        geometry = (g.filter_h, g.filter_w, g.stride, g.pad, g.out_h, g.out_w)

        def forward_chunk(part, lo, hi):
            _conv_forward_kernel(x, weights, bias, *geometry, lo, hi, part, keep, cols, out)

        run_in_chunks(n_img, n_parts, forward_chunk)
    elif keep and cols.size:  # no filters, but the columns were asked for
        im2col_per_sample(x, g.filter_h, g.filter_w, g.stride, g.pad, out=cols)


def fused_backward(dout, x, weights, g, n_parts, dx, dW_per_sample, cols=None):
    """Fill ``dx`` ``(N, C, H, W)`` and ``dW_per_sample`` ``(N, K, FN)`` from valid
    arguments: ``dout`` ``(N, FN, P)``, ``x`` and ``weights`` as in :func:`fused_forward`,
    all C-contiguous of one float dtype. ``cols``: the columns forward kept (writeable), or
    None to rebuild them ``n_parts`` samples at a time."""
    blas.require()
    n_img, k, n_out = x.shape[0], weights.shape[1], g.out_h * g.out_w
    kept = cols is not None
    if not kept:
        cols = empty_result((n_parts, k, n_out), x.dtype)
    if dx.size and dout.size:
        dcols = empty_result((n_parts, k, n_out), x.dtype)
        geometry = (g.filter_h, g.filter_w, g.stride, g.pad, g.out_h, g.out_w)

        def backward_chunk(part, lo, hi):
            _conv_backward_kernel(
                x, weights, dout, *geometry, lo, hi, part, kept, cols, dcols, dW_per_sample, dx
            )

        run_in_chunks(n_img, n_parts, backward_chunk)
    else:
        dx[...] = 0
        dW_per_sample[...] = 0


# ------------------------------------------------------------------ public functions
def _require_kernels():
    if not blas.available():
        raise RuntimeError(
            "nnkernels.conv_forward/conv_backward need the library's BLAS (the "
            f"scipy-openblas32 package), which this process does not have "
            f"({blas.describe()['why']}); use im2col_per_sample/col2im_per_sample with "
            "nnkernels.matmul instead"
        )


def _parts(n_parts, n_img):
    if n_parts is None:
        n_parts = get_num_threads()
    n_parts = check_int(n_parts, "n_parts", minimum=1)
    return max(1, min(n_parts, n_img))


def _numeric(value, name):
    """``value`` as an ndarray (no copy when it is one), for dtype promotion before casting."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array, got {type(value).__name__}") from exc


def _inputs(x, W, third, third_name):
    """``x`` and ``W`` validated and cast to their promoted float dtype (with ``third``,
    the bias or dout, taking part in the promotion as NumPy's arithmetic would)."""
    x, W = _numeric(x, "x"), _numeric(W, "W")
    if third is None:
        raise TypeError(f"{third_name} must be a real numeric array, got None")
    check_ndim(x, "x", 4)
    check_ndim(W, "W", 4)
    if W.shape[1] != x.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels (shape {x.shape}) but W expects "
            f"{W.shape[1]} (W shape {W.shape})"
        )
    # before converting ``third``: a Python scalar bias must stay weak (0 keeps float32)
    dtype = compute_dtype(x, W, third, names=("x", "W", third_name))
    third = _numeric(third, third_name)
    return as_float_array(x, "x", dtype=dtype), as_float_array(W, "W", dtype=dtype), third, dtype


def _conv_examples(make):
    """Examples only where the kernels are available."""
    return lambda dtype: make(dtype) if blas.available() else []


@examples(
    _conv_examples(
        lambda dtype: [
            example(
                _examples.image(dtype),
                _examples.rand((4, 5, 3, 3), dtype, 1),
                _examples.rand(4, dtype, 2),
                2,
                1,
            )
        ]
    )
)
def conv_forward(x, W, b, stride=1, pad=0, *, out=None, col=None, n_parts=None):
    """Convolution (cross-correlation) of ``x`` ``(N, C, H, W)`` by ``W`` ``(FN, C, FH, FW)``.

    ``b`` has ``FN`` elements or is a scalar. Returns ``(N, FN, out_h, out_w)`` of NumPy's
    promoted float dtype of the three (float32 or float64), ``out_h = (H + 2*pad - FH)//stride
    + 1``. ``out``, if given, a writeable C-contiguous ``(N, FN, out_h*out_w)`` array of that
    dtype, is filled (and returned reshaped). ``col``, if given, a writeable C-contiguous
    ``(N, C*FH*FW, out_h*out_w)`` array of that dtype, receives every sample's columns (as
    :func:`im2col_per_sample` writes them) for a later :func:`conv_backward`; without it
    only ``n_parts`` samples' columns exist at a time. The samples are shared over
    ``n_parts`` threads (default: ``get_num_threads()``).
    """
    _require_kernels()
    x, W, b, dtype = _inputs(x, W, b, "b")
    n_filters, channels, fh, fw = W.shape
    g = Geometry.of(x.shape, fh, fw, stride, pad)
    weights = W.reshape(n_filters, channels * fh * fw)
    if b.size not in (1, n_filters):
        raise ValueError(
            f"b must have {n_filters} elements (one per filter) or be a scalar, got shape {b.shape}"
        )
    # a copy: out or col may not overwrite it while the kernel still reads it
    bias = np.array(
        np.broadcast_to(as_float_array(b, "b", dtype=dtype).reshape(-1), (n_filters,)),
        dtype=dtype,
        copy=True,
    )
    n_img = x.shape[0]
    k, n_out = weights.shape[1], g.out_h * g.out_w
    n_parts = _parts(n_parts, n_img)
    result = checked_out(out, (n_img, n_filters, n_out), dtype, inputs=(x, W, b))
    if col is not None:
        col = checked_out(col, (n_img, k, n_out), dtype, name="col", inputs=(x, W, b, result))
    fused_forward(x, weights, bias, g, n_parts, result, col)
    return result.reshape(n_img, n_filters, g.out_h, g.out_w)


@examples(
    _conv_examples(
        lambda dtype: [
            example(
                _examples.rand((3, 4, 5, 4), dtype, 3),
                _examples.image(dtype),
                _examples.rand((4, 5, 3, 3), dtype, 1),
                2,
                1,
            )
        ]
    )
)
def conv_backward(
    dout, x, W, stride=1, pad=0, *, col=None, dx=None, dW_per_sample=None, n_parts=None
):
    """Gradients of :func:`conv_forward`: ``(dx, dW, db)``.

    ``dout`` ``(N, FN, out_h, out_w)`` or ``(N, FN, out_h*out_w)``; ``x`` and ``W`` as in
    forward; the gradients have NumPy's promoted float dtype of the three. ``col``: the
    columns forward kept (the same writeable array; else they are rebuilt, ``n_parts``
    samples at a time). ``dx`` ``(N, C, H, W)`` and ``dW_per_sample`` ``(N, C*FH*FW, FN)``,
    if given (writeable, C-contiguous, of that dtype), are filled instead of fresh arrays.
    ``dW`` is the sum over samples of the per-sample products, ``db`` of ``dout`` summed per
    sample, as NumPy sums them.
    """
    _require_kernels()
    x, W, dout, dtype = _inputs(x, W, dout, "dout")
    n_filters, channels, fh, fw = W.shape
    g = Geometry.of(x.shape, fh, fw, stride, pad)
    n_img = x.shape[0]
    k, n_out = channels * fh * fw, g.out_h * g.out_w
    if dout.shape not in ((n_img, n_filters, g.out_h, g.out_w), (n_img, n_filters, n_out)):
        raise ValueError(
            f"dout must have shape {(n_img, n_filters, g.out_h, g.out_w)} (or "
            f"{(n_img, n_filters, n_out)}), got {dout.shape}"
        )
    d = as_float_array(dout, "dout", dtype=dtype).reshape(n_img, n_filters, n_out)
    weights = W.reshape(n_filters, k)
    n_parts = _parts(n_parts, n_img)
    grad_x = checked_out(dx, x.shape, dtype, name="dx", inputs=(x, W, d))
    grad_w = checked_out(
        dW_per_sample, (n_img, k, n_filters), dtype, name="dW_per_sample", inputs=(x, W, d, grad_x)
    )
    if col is not None:
        # writeable, as forward needed it: the kernel's one column type serves both cases
        col = checked_out(col, (n_img, k, n_out), dtype, name="col", inputs=(grad_x, grad_w))
    fused_backward(d, x, weights, g, n_parts, grad_x, grad_w, col)
    dW = grad_w.sum(axis=0).T.reshape(n_filters, channels, fh, fw)
    db = d.sum(axis=2).sum(axis=0)
    return grad_x, dW, db
