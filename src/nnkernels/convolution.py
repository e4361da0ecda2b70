"""Convolution forward and backward, each one kernel: columns, BLAS products and folding
per sample, with no return to Python in between.

Each thread (:func:`nnkernels.sample_parts.run_parts`) runs the GIL-free kernel on chunks
of the samples, taking the next chunk when done, and, for each sample, writes its
columns (``(C*FH*FW, out_h*out_w)``, the per-sample layout of
:func:`nnkernels.im2col_per_sample`) into a buffer that stays in cache, multiplies by
calling NumPy's OpenBLAS (``nnkernels._blas``; held at one thread meanwhile) and adds the
bias, or in backward forms the sample's weight gradient and folds its input gradient back.
Every product is the one ``numpy.matmul`` makes for that sample, so results are the same
bits as columns plus ``numpy.matmul`` (except where a product has a dimension of one:
NumPy then calls ``gemv``/``dot``), whatever the thread count.

Available only where NumPy's BLAS is its OpenBLAS wheel build (:func:`conv_kernels_available`);
elsewhere the functions raise ``RuntimeError`` and callers use the column functions and
``numpy.matmul``.
"""

import threading

import numpy as np

from . import _blas, _examples, columns
from ._blas import NO_TRANS, TRANS, gemm
from ._jit import threaded_kernel
from ._registry import example, examples
from ._validation import (
    as_float_array,
    check_int,
    check_ndim,
    checked_out,
    compute_dtype,
    empty_result,
)
from .columns import _fold_plane, _unfold_plane, conv_output_shape, im2col_per_sample
from .sample_parts import run_parts
from .threads import get_num_threads, single_threaded_blas

__all__ = ["conv_kernels_available", "conv_forward", "conv_backward"]


def conv_kernels_available():
    """Whether :func:`conv_forward` and :func:`conv_backward` can run in this process
    (NumPy's BLAS is the OpenBLAS of its PyPI wheels); the first call loads that OpenBLAS
    into LLVM's symbol table (``nnkernels.show_config()`` says why not, where not)."""
    return _blas.AVAILABLE


# ------------------------------------------------------------------ kernels
# Both kernels compile in the column code of columns.py and the BLAS binding of _blas.py.
@threaded_kernel(also_reads=(columns, _blas))
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


@threaded_kernel(also_reads=(columns, _blas))
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


# ------------------------------------------------------------------ wrappers
def _require_kernels():
    if not _blas.AVAILABLE:
        raise RuntimeError(
            "nnkernels.conv_forward/conv_backward need NumPy's OpenBLAS (the PyPI wheels' "
            "scipy_cblas_?gemm64_ symbols), which this process does not have; use "
            "im2col_per_sample/col2im_per_sample with numpy.matmul instead"
        )


def _parts(n_parts, n_img):
    if n_parts is None:
        n_parts = get_num_threads()
    n_parts = check_int(n_parts, "n_parts", minimum=1)
    return max(1, min(n_parts, n_img))


#: chunks of samples per part that the parts take in turn, so that a thread which starts late
#: (a helper waking up) takes fewer samples instead of holding up the call
CHUNKS_PER_PART = 8


def _run_in_chunks(n_img, n_parts, run_chunk):
    """Call ``run_chunk(part, lo, hi)`` over ``range(n_img)`` in chunks, on ``n_parts``
    threads (:func:`run_parts`), each thread taking the next chunk when done with one.

    Every sample's results are computed by one call whatever thread takes it, so they do
    not depend on the scheduling; ``part`` names the thread's scratch.
    """
    if n_parts == 1:
        run_chunk(0, 0, n_img)
        return
    size = max(1, n_img // (n_parts * CHUNKS_PER_PART))
    starts = iter(range(0, n_img, size))
    lock = threading.Lock()

    def part_work(part, lo, hi, stop):
        while not stop.is_set():
            with lock:
                start = next(starts, None)
            if start is None:
                return
            run_chunk(part, start, min(n_img, start + size))

    run_parts([(0, n_img)] * n_parts, part_work)


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
    """Examples only where the kernels are available; they have no twins."""
    return lambda dtype: [call.parallel_only() for call in make(dtype)] if _blas.AVAILABLE else []


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
    out_h, out_w = conv_output_shape(x.shape, fh, fw, stride, pad)
    stride, pad = int(stride), int(pad)
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
    k, n_out = weights.shape[1], out_h * out_w
    n_parts = _parts(n_parts, n_img)
    result = checked_out(out, (n_img, n_filters, n_out), dtype, inputs=(x, W, b))
    if col is None:
        cols, keep = empty_result((n_parts, k, n_out), dtype), False
    else:
        cols = checked_out(col, (n_img, k, n_out), dtype, name="col", inputs=(x, W, b, result))
        keep = True
    if result.size and k == 0:  # no input channels: the sums are empty
        result[...] = bias[:, None]
    elif result.size:
        geometry = (fh, fw, stride, pad, out_h, out_w)

        def forward_chunk(part, lo, hi):
            _conv_forward_kernel(x, weights, bias, *geometry, lo, hi, part, keep, cols, result)

        with single_threaded_blas():
            _run_in_chunks(n_img, n_parts, forward_chunk)
    elif keep and cols.size:  # no filters, but the columns were asked for
        im2col_per_sample(x, fh, fw, stride, pad, out=cols)
    return result.reshape(n_img, n_filters, out_h, out_w)


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
    samples at a time). ``dx``
    ``(N, C, H, W)`` and ``dW_per_sample`` ``(N, C*FH*FW, FN)``, if given (writeable,
    C-contiguous, of that dtype), are filled instead of fresh arrays. ``dW`` is the sum
    over samples of the per-sample products, ``db`` of ``dout`` summed per sample, as NumPy
    sums them.
    """
    _require_kernels()
    x, W, dout, dtype = _inputs(x, W, dout, "dout")
    n_filters, channels, fh, fw = W.shape
    out_h, out_w = conv_output_shape(x.shape, fh, fw, stride, pad)
    stride, pad = int(stride), int(pad)
    n_img = x.shape[0]
    k, n_out = channels * fh * fw, out_h * out_w
    if dout.shape not in ((n_img, n_filters, out_h, out_w), (n_img, n_filters, n_out)):
        raise ValueError(
            f"dout must have shape {(n_img, n_filters, out_h, out_w)} (or "
            f"{(n_img, n_filters, n_out)}), got {dout.shape}"
        )
    d = as_float_array(dout, "dout", dtype=dtype).reshape(n_img, n_filters, n_out)
    weights = W.reshape(n_filters, k)
    n_parts = _parts(n_parts, n_img)
    grad_x = checked_out(dx, x.shape, dtype, name="dx", inputs=(x, W, d))
    grad_w = checked_out(
        dW_per_sample, (n_img, k, n_filters), dtype, name="dW_per_sample", inputs=(x, W, d, grad_x)
    )
    if col is None:
        cols, kept = empty_result((n_parts, k, n_out), dtype), False
    else:
        # writeable, as forward needed it: the kernel's one column type serves both cases
        cols = checked_out(col, (n_img, k, n_out), dtype, name="col", inputs=(grad_x, grad_w))
        kept = True
    if grad_x.size and d.size:
        dcols = empty_result((n_parts, k, n_out), dtype)
        geometry = (fh, fw, stride, pad, out_h, out_w)

        def backward_chunk(part, lo, hi):
            _conv_backward_kernel(
                x, weights, d, *geometry, lo, hi, part, kept, cols, dcols, grad_w, grad_x
            )

        with single_threaded_blas():
            _run_in_chunks(n_img, n_parts, backward_chunk)
    else:
        grad_x[...] = 0
        grad_w[...] = 0
    dW = grad_w.sum(axis=0).T.reshape(n_filters, channels, fh, fw)
    db = d.sum(axis=2).sum(axis=0)
    return grad_x, dW, db
