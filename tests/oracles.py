"""Slow, obvious NumPy versions of what the library computes: the test oracles, each once.

Where ``nnlayers.reference`` computes something (convolution, columns, pooling without
padding, per-feature batch norm) the oracle runs it in float64; where it does not (padded
pooling, per-channel batch norm, the per-sample column layout) the oracle is a loop or a
formula simple enough to check by eye. Tests compare the library with these and never
restate them.
"""

import numpy as np

import nnlayers.reference as ref

BATCHNORM_EPS = 1e-6


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ------------------------------------------------------------------ products
def matmul(a, b):
    """``a @ b`` by NumPy in float64 (2-D or batched operands)."""
    return np.matmul(_f64(a), _f64(b))


# ------------------------------------------------------------------ columns
def im2col_per_sample(x, filter_h, filter_w, stride=1, pad=0):
    """``x`` ``(N, C, H, W)`` unfolded per sample: ``(N, C*FH*FW, OH*OW)`` float64, each
    sample's rows of the reference's ``im2col`` as columns."""
    x = np.asarray(x)
    col = ref.im2col(x, filter_h, filter_w, stride, pad)
    return col.reshape(x.shape[0], -1, col.shape[1]).transpose(0, 2, 1)


def col2im_per_sample(cols, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Per-sample columns ``(N, C*FH*FW, OH*OW)`` folded back (overlaps summed) into
    ``input_shape`` (float64) by the reference's ``col2im``."""
    cols = np.asarray(cols)
    book = cols.transpose(0, 2, 1).reshape(-1, cols.shape[1])
    return ref.col2im(book, input_shape, filter_h, filter_w, stride, pad)


# ------------------------------------------------------------------ convolution
def convolution(x, W, b, stride=1, pad=0, dout=None):
    """The reference layer's forward (and, given ``dout``, backward) in float64.

    Returns ``out`` ``(N, FN, OH, OW)``, or ``(out, dx, dW, db)`` when ``dout`` is given.
    ``b`` may be a scalar.
    """
    layer = ref.Convolution(_f64(W), _f64(b), stride, pad)
    out = layer.forward(_f64(x))
    if dout is None:
        return out
    dx = layer.backward(_f64(dout))
    return out, dx, layer.dW, layer.db


# ------------------------------------------------------------------ max pooling
def maxpool_forward(x, pool_h, pool_w, stride=1, pad=0):
    """Max over the cells of each window that lie inside the image.

    The first maximum in row-major window order wins, and a NaN beats everything (as
    ``np.argmax``); padded cells are never candidates. Returns ``out`` ``(N, C, OH, OW)``
    of x's dtype and ``argmax`` ``(N, C, OH, OW)`` int64, the winner's ``ky*pool_w + kx``.
    """
    x = np.asarray(x)
    n_img, channels, height, width = x.shape
    out_h = (height + 2 * pad - pool_h) // stride + 1
    out_w = (width + 2 * pad - pool_w) // stride + 1
    out = np.empty((n_img, channels, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n_img, channels, out_h, out_w), dtype=np.int64)
    for n, c, oy, ox in np.ndindex(n_img, channels, out_h, out_w):
        values, keys = [], []
        for ky, kx in np.ndindex(pool_h, pool_w):
            y, xx = oy * stride + ky - pad, ox * stride + kx - pad
            if 0 <= y < height and 0 <= xx < width:
                values.append(x[n, c, y, xx])
                keys.append(ky * pool_w + kx)
        best = int(np.argmax(np.array(values, dtype=x.dtype)))
        out[n, c, oy, ox] = values[best]
        argmax[n, c, oy, ox] = keys[best]
    return out, argmax


def maxpool_backward(dout, argmax, input_shape, pool_h, pool_w, stride=1, pad=0, dtype=None):
    """Each window's gradient added to its winning cell, window by window in row-major order.

    ``dout`` and ``argmax`` are ``(N, C, OH, OW)``; a winner in the padding adds nothing.
    Sums in ``dtype`` (float64 unless given). Returns ``dx`` of ``input_shape``.
    """
    dout, argmax = np.asarray(dout), np.asarray(argmax)
    dx = np.zeros(input_shape, dtype=np.float64 if dtype is None else dtype)
    height, width = input_shape[2], input_shape[3]
    for n, c, oy, ox in np.ndindex(dout.shape):
        ky, kx = divmod(int(argmax[n, c, oy, ox]), pool_w)
        y, xx = oy * stride + ky - pad, ox * stride + kx - pad
        if 0 <= y < height and 0 <= xx < width:
            dx[n, c, y, xx] += dout[n, c, oy, ox]
    return dx


# ------------------------------------------------------------------ batch norm
def _stat_axes(a):
    """Axes a statistic is taken over and the shape it broadcasts as: per feature for
    ``(N, D)``, per channel for ``(N, C, H, W)``."""
    return ((0,), (1, -1)) if np.ndim(a) == 2 else ((0, 2, 3), (1, -1, 1, 1))


def batchnorm_forward(x, gamma, beta, eps=BATCHNORM_EPS):
    """Training-mode batch norm in float64: per feature (2-D ``x``) or per channel (4-D).

    Returns ``out`` and ``xn`` of x's shape and ``mean``, ``var`` (biased), ``std`` =
    ``sqrt(var + eps)`` of one value per feature or channel.
    """
    x = _f64(x)
    axes, shape = _stat_axes(x)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    std = np.sqrt(var + eps)
    xn = (x - mean.reshape(shape)) / std.reshape(shape)
    out = _f64(gamma).reshape(shape) * xn + _f64(beta).reshape(shape)
    return out, xn, mean, var, std


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=BATCHNORM_EPS):
    """Inference-mode batch norm in float64 with the given statistics (x's shape)."""
    x = _f64(x)
    _, shape = _stat_axes(x)
    xn = (x - _f64(running_mean).reshape(shape)) / np.sqrt(_f64(running_var) + eps).reshape(shape)
    return _f64(gamma).reshape(shape) * xn + _f64(beta).reshape(shape)


def batchnorm_backward(dout, xn, std, gamma):
    """Gradients of :func:`batchnorm_forward` from the normalised input: ``(dx, dgamma,
    dbeta)`` in float64."""
    dout, xn = _f64(dout), _f64(xn)
    axes, shape = _stat_axes(dout)
    dbeta = dout.sum(axis=axes)
    dgamma = (xn * dout).sum(axis=axes)
    m = dout.size // max(dbeta.size, 1)
    dx = (_f64(gamma) / _f64(std)).reshape(shape) * (
        dout - (dbeta / m).reshape(shape) - xn * (dgamma / m).reshape(shape)
    )
    return dx, dgamma, dbeta


def batchnorm_backward_from_input(dout, x, mean, std, gamma):
    """:func:`batchnorm_backward` with ``xn`` recomputed from the input and its statistics."""
    x = _f64(x)
    _, shape = _stat_axes(x)
    xn = (x - _f64(mean).reshape(shape)) / _f64(std).reshape(shape)
    return batchnorm_backward(dout, xn, std, gamma)
