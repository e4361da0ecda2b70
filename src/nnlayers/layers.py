"""Drop-in layers: the reference's classes, constructors, methods and attributes.

Each layer reads its parameters (``W``, ``b``, ``gamma``, ``beta``) at every call and never
keeps a copy or a cast of them, so in-place updates by optimizers and rebinding by
``load_params`` are seen by the next ``forward``. Inputs are never modified. Results have
NumPy's promoted dtype of the inputs and parameters: an all-float32 network stays float32.

Every array a layer returns, and every attribute it exposes, is a new array that the layer
never writes again; scratch reused between calls is internal and taken per call, so
concurrent ``forward`` calls on one layer do not share it.
"""

import copy

import numpy as np

import nnkernels

from . import functions as _functions
from .functions import *  # noqa: F403 - the reference's layers module re-exports them
from .functions import _label_indices, cross_entropy_error, sigmoid, softmax
from .util import col2im, im2col

# What ``from common.layers import *`` gives a script: the layers, the functions, im2col,
# col2im and ``np``, so switching that import line to ``nnlayers.layers`` is enough.
__all__ = [
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
    "im2col",
    "col2im",
    "np",
    *_functions.__all__,
]


def _as_input(x, name="x"):
    """``x`` as a plain ndarray of a real numeric dtype (no copy when it already is one)."""
    return nnkernels.real_array(x, name)


def _require_forward(layer, attr):
    if getattr(layer, attr) is None:
        raise ValueError(f"{type(layer).__name__}.backward() called before forward()")


def _check_dout(dout, shape, layer):
    dout = _as_input(dout, "dout")
    if dout.shape != tuple(shape):
        raise ValueError(
            f"{type(layer).__name__}.backward: dout must have the shape of the last forward "
            f"output {tuple(shape)}, got {dout.shape}"
        )
    return dout


def _bias_column(b, n_out, dtype, name="b"):
    """Bias as a ``(n_out, 1)`` column or a 0-d array, for adding to ``(.., n_out, P)``."""
    b = _as_input(b, name)
    if b.size == n_out:
        return b.astype(dtype, copy=False).reshape(n_out, 1)
    if b.size == 1:
        return b.astype(dtype, copy=False).reshape(())
    raise ValueError(
        f"{name} must have {n_out} elements (one per filter) or be a scalar, got shape {b.shape}"
    )


class Relu:
    """``max(x, 0)``; ``mask`` is the boolean array ``x <= 0`` of the last forward."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        out, self.mask = nnkernels.relu_forward(_as_input(x))
        return out

    def backward(self, dout):
        _require_forward(self, "mask")
        dout = _check_dout(dout, self.mask.shape, self)
        return nnkernels.relu_backward(dout, self.mask)


class Sigmoid:
    """Logistic activation; ``out`` holds the last forward output."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = sigmoid(_as_input(x))
        return self.out

    def backward(self, dout):
        _require_forward(self, "out")
        dout = _check_dout(dout, self.out.shape, self)
        return dout * (1.0 - self.out) * self.out


class Affine:
    """``x.reshape(N, -1) @ W + b``. ``W`` is ``(D, M)``, ``b`` is ``(M,)`` or a scalar."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x = _as_input(x)
        if x.ndim < 1:
            raise ValueError("x must have a batch axis, got a 0-d array")
        W = _as_input(self.W, "W")
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D (input features, outputs), got shape {W.shape}")
        dtype = nnkernels.compute_dtype(x, W, self.b, names=("x", "W", "b"))
        b = _as_input(self.b, "b")
        if b.size not in (1, W.shape[1]) or b.ndim > 2:
            raise ValueError(
                f"b must have {W.shape[1]} elements (one per output) or be a scalar, "
                f"got shape {b.shape}"
            )
        n_features = int(np.prod(x.shape[1:], dtype=np.int64))
        if n_features != W.shape[0]:
            raise ValueError(
                f"x has {n_features} features per sample (shape {x.shape}) but W expects "
                f"{W.shape[0]} (W shape {W.shape})"
            )
        x2d = x.reshape(x.shape[0], n_features)
        self.original_x_shape = x.shape
        self.x = x2d
        out = nnkernels.matmul(x2d.astype(dtype, copy=False), W.astype(dtype, copy=False))
        out += b.astype(dtype, copy=False).reshape(-1)
        return out

    def backward(self, dout):
        _require_forward(self, "x")
        W = _as_input(self.W, "W")
        dout = _check_dout(dout, (self.x.shape[0], W.shape[1]), self)
        dtype = nnkernels.compute_dtype(dout, self.x, W, names=("dout", "x", "W"))
        dout = dout.astype(dtype, copy=False)
        dx = nnkernels.matmul(dout, W.astype(dtype, copy=False).T)
        self.dW = nnkernels.matmul(self.x.astype(dtype, copy=False).T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax then mean cross-entropy. ``t``: labels ``(N,)``/``(N, 1)`` or one-hot ``(N, K)``.

    Integer labels must lie in ``[0, K)``: ``forward`` raises ``ValueError`` naming the first
    label outside, its position and ``K`` (the reference raises ``IndexError`` for a label
    of ``K`` or more, and scores a negative one as counted from the last class).
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        x = _as_input(x)
        t = np.asarray(t)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D scores (N, classes), got shape {x.shape}")
        if t.size != x.size and t.size != x.shape[0]:
            raise ValueError(
                f"t must be labels of shape ({x.shape[0]},) or ({x.shape[0]}, 1), or one-hot "
                f"{x.shape}; got shape {t.shape}"
            )
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        _require_forward(self, "y")
        batch_size = self.y.shape[0]
        if self.t.size == self.y.size:
            return (self.y - self.t.reshape(self.y.shape)) / batch_size
        dx = self.y.copy()
        dx[np.arange(batch_size), _label_indices(self.t, batch_size, self.y.shape[1])] -= 1
        return dx / batch_size


class Dropout:
    """Non-inverted dropout: train ``x * (rand > ratio)``, test ``x * (1 - ratio)``.

    ``rng`` (keyword-only) may be a seed or a ``numpy.random.Generator``; without it the
    mask is drawn from NumPy's global state with ``np.random.rand``, exactly as the reference.
    """

    def __init__(self, dropout_ratio=0.5, *, rng=None):
        self.dropout_ratio = dropout_ratio
        self.mask = None
        self.rng = None if rng is None else np.random.default_rng(rng)

    def forward(self, x, train_flg=True):
        x = _as_input(x)
        if not 0.0 <= float(self.dropout_ratio) <= 1.0:
            raise ValueError(f"dropout_ratio must be in [0, 1], got {self.dropout_ratio}")
        if train_flg:
            draw = self.rng.random(x.shape) if self.rng is not None else np.random.rand(*x.shape)
            self.mask = draw > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        _require_forward(self, "mask")
        dout = _check_dout(dout, self.mask.shape, self)
        return dout * self.mask


class BatchNormalization:
    """Batch normalisation with the reference's state and update rules.

    By default statistics are per activation: 4-D input is viewed as ``(N, C*H*W)``, as in
    the reference. With ``per_channel=True`` (keyword-only) 4-D input is normalised per
    channel over ``(N, H, W)`` like PyTorch's ``BatchNorm2d`` (biased variance), and
    ``gamma``/``beta``/running statistics have shape ``(C,)``. eps is 1e-6 (the reference's
    ``10e-7``); ``running = momentum*running + (1-momentum)*batch``.

    Like ``Affine`` and ``Convolution``, the layer keeps a reference to its last training
    input (not a normalised copy, ``xn``, which the reference writes: one array of memory
    traffic fewer per step); ``backward`` recomputes ``xn`` from it, so changing that
    input in place between ``forward`` and ``backward`` changes the gradients. ``xn`` and
    ``xc`` remain readable, computed on demand.
    """

    eps = 10e-7

    def __init__(
        self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, *, per_channel=False
    ):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.per_channel = bool(per_channel)
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.std = None
        self.dgamma = None
        self.dbeta = None
        self._x = None  # the last training input, 2-D or 4-D as the kernels see it
        self._mean64 = None  # its statistics as accumulated (float64), for backward
        self._std64 = None

    @property
    def xn(self):
        """Normalised input of the last training forward, ``(x - mean) / std``: the values
        the forward normalised with, computed on demand (None before a training forward)."""
        if self._x is None:
            return None
        x64 = self._x.astype(np.float64)
        normalized = (x64 - self._stat_shape(self._mean64)) * self._stat_shape(1.0 / self._std64)
        return normalized.astype(self.std.dtype, copy=False)

    @property
    def xc(self):
        """Centred input of the last training forward (``xn * std``), computed on demand."""
        xn = self.xn
        return None if xn is None else xn * self._stat_shape(self.std)

    def _stat_shape(self, v):
        return v.reshape(1, -1, 1, 1) if self._x.ndim == 4 else v

    def _view(self, x):
        if self.per_channel and x.ndim == 4:
            return x
        return x.reshape(x.shape[0], -1)

    def forward(self, x, train_flg=True):
        x = _as_input(x)
        if x.ndim not in (2, 4):
            raise ValueError(f"x must be 2-D (N, D) or 4-D (N, C, H, W), got shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one sample, got batch size 0")
        xv = self._view(x)
        n_stats = xv.shape[1]
        dtype = nnkernels.compute_dtype(x, self.gamma, self.beta, names=("x", "gamma", "beta"))
        if self.running_mean is None:
            self.running_mean = np.zeros(n_stats, dtype=dtype)
            self.running_var = np.zeros(n_stats, dtype=dtype)
        if train_flg:
            out, _, mean64, var64, std64 = nnkernels.batchnorm_forward(
                xv, self.gamma, self.beta, self.eps, return_xn=False, stats_dtype=np.float64
            )
            self.batch_size = xv.shape[0]
            self._x, self._mean64, self._std64 = xv, mean64, std64
            self.std = std64.astype(dtype)
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mean64.astype(dtype)
            self.running_var = m * self.running_var + (1 - m) * var64.astype(dtype)
        else:
            out = nnkernels.batchnorm_inference(
                xv, self.gamma, self.beta, self.running_mean, self.running_var, self.eps
            )
        self.input_shape = x.shape
        return out.reshape(x.shape)

    def backward(self, dout):
        _require_forward(self, "_x")
        dout = _check_dout(dout, self.input_shape, self)
        dx, dgamma, dbeta = nnkernels.batchnorm_backward_from_input(
            self._view(dout), self._x, self._mean64, self._std64, self.gamma
        )
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx.reshape(self.input_shape)


class Convolution:
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` by ``W`` ``(FN, C, FH, FW)``.

    Output ``(N, FN, out_h, out_w)``, ``out = (H + 2*pad - FH)//stride + 1``, computed by a
    :class:`nnkernels.ConvolutionEngine` (per sample, through columns and matrix products on
    the library's BLAS, with no transpose); results are the same whatever the route and the
    thread count.

    ``route`` (keyword-only): ``"auto"``, ``"kernels"`` or ``"matmul"``; ``None`` (the
    default) follows the ``conv_route`` setting (``nnkernels.set_config``). ``col`` and
    ``col_W`` have the reference's meaning and shape (``(N*out_h*out_w, C*FH*FW)`` and
    ``(C*FH*FW, FN)``), computed on demand from the last input and ``W``.
    """

    def __init__(self, W, b, stride=1, pad=0, *, route=None):
        self._engine = nnkernels.ConvolutionEngine(stride, pad, route)
        self.W = W
        self.b = b
        self.x = None
        self.dW = None
        self.db = None
        self._col = None

    def __copy__(self):
        # the engine holds the last forward's state: a copy gets an engine of its own
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__, _engine=copy.copy(self._engine))
        return copied

    stride = property(
        lambda self: self._engine.stride, lambda self, value: setattr(self._engine, "stride", value)
    )
    pad = property(
        lambda self: self._engine.pad, lambda self, value: setattr(self._engine, "pad", value)
    )
    route = property(
        lambda self: self._engine.route, lambda self, value: setattr(self._engine, "route", value)
    )

    @property
    def col(self):
        """The last input's columns in the reference's layout ``(N*out_h*out_w, C*FH*FW)``
        (a new array per forward, computed when first read; None before a forward)."""
        return self._col if self._col is not None else self._engine.columns()

    @col.setter
    def col(self, value):
        self._col = value

    @property
    def col_W(self):
        """``W`` as the reference's ``(C*FH*FW, FN)`` matrix (a view of ``W``)."""
        W = np.asarray(self.W)
        return W.reshape(W.shape[0], int(np.prod(W.shape[1:]))).T

    def forward(self, x):
        out = self._engine.forward(x, self.W, self.b)
        self.x = self._engine.input
        self._col = None
        return out

    def backward(self, dout):
        if self._engine.input is None:
            raise ValueError("Convolution.backward() called before forward()")
        dx, self.dW, self.db = self._engine.backward(dout, self.W)
        return dx


class Pooling:
    """Max pooling of ``(N, C, H, W)`` over ``pool_h x pool_w`` windows.

    Output ``(N, C, out_h, out_w)`` with ``out = (H + 2*pad - pool)//stride + 1`` (padding
    works here; padded cells never win). ``arg_max`` is exposed in the reference's layout:
    a flat array over (n, oy, ox, c) of the winning index ``ky*pool_w + kx`` in the window.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._argmax = None

    @property
    def arg_max(self):
        if self._argmax is None:
            return None
        return self._argmax.transpose(0, 2, 3, 1).ravel()

    @arg_max.setter
    def arg_max(self, value):
        if value is None or self._argmax is None:
            self._argmax = None if value is None else self._argmax
            return
        N, C, oh, ow = self._argmax.shape
        self._argmax = np.ascontiguousarray(
            np.asarray(value).reshape(N, oh, ow, C).transpose(0, 3, 1, 2), dtype=np.int64
        )

    def forward(self, x):
        x = _as_input(x)
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D (N, C, H, W), got shape {x.shape}")
        out, self._argmax = nnkernels.maxpool_forward(
            x, self.pool_h, self.pool_w, self.stride, self.pad
        )
        self.x = x
        return out

    def backward(self, dout):
        _require_forward(self, "_argmax")
        dout = _check_dout(dout, self._argmax.shape, self)
        return nnkernels.maxpool_backward(
            dout, self._argmax, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad
        )
