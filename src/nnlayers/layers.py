"""Drop-in layers: the reference's classes, constructors, methods and attributes.

Each layer reads its parameters (``W``, ``b``, ``gamma``, ``beta``) at every call and never
keeps a copy or a cast of them, so in-place updates by optimizers and rebinding by
``load_params`` are seen by the next ``forward``. Inputs are never modified. Results have
NumPy's promoted dtype of the inputs and parameters: an all-float32 network stays float32.
"""

import sys

import numpy as np

import nnkernels
from nnkernels._validation import as_float_array, check_int, compute_dtype, empty_result

from . import functions as _functions
from . import _products
from ._products import run_parts, sample_parts
from .config import conv_chunk_size
from .functions import *  # noqa: F403 - the reference's layers module re-exports them
from .functions import _label_indices, cross_entropy_error, sigmoid, softmax
from .util import col2im, im2col

# What ``from common.layers import *`` gives a script: the layers, the functions, im2col,
# col2im and ``np``, so switching that import line to ``nnlayers.layers`` is enough.
__all__ = [
    "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout", "BatchNormalization",
    "Convolution", "Pooling", "im2col", "col2im", "np", *_functions.__all__,
]


def _as_input(x, name="x"):
    """``x`` as an ndarray of a real numeric dtype (no copy when it already is one)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__}") from exc
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    return x


#: results smaller than this are not recycled: the allocator reuses small blocks without
#: page faults, and checking (shape, references, overlap) costs microseconds per call
_RECYCLE_MIN_BYTES = 1 << 20


def _references(array):
    return sys.getrefcount(array)


def _recyclable(array, shape, dtype):
    """Whether a layer may write a new result into ``array``, the previous one it kept:
    it has this shape and dtype, is worth recycling, and nothing else refers to it (no
    variable, no view). Pass the layer's attribute or dict entry straight in."""
    return (array is not None and array.shape == tuple(shape) and array.dtype == dtype
            and array.nbytes >= _RECYCLE_MIN_BYTES and _references(array) <= _SOLE_OWNER)


def _previous_result(results, name, shape, dtype):
    """``results[name]``, a layer's previous result, when it may be overwritten (see
    ``_recyclable``); else None, and the entry is dropped."""
    if _recyclable(results.get(name), shape, dtype):
        return results[name]
    results.pop(name, None)
    return None


def _keep_result(results, name, array):
    """Remember a new result for recycling if it is large enough to be worth it."""
    if array.nbytes >= _RECYCLE_MIN_BYTES:
        results[name] = array


def _references_of_sole_owned(array):
    return _references(array)  # the same call depth as in _recyclable


def _measure_sole_owner():
    holder = {"probe": np.empty(0)}
    return _references_of_sole_owned(holder.get("probe"))


#: what ``_references`` reports inside ``_recyclable`` for an array held by one container
#: only (measured, as the count of temporary references varies between Python versions)
_SOLE_OWNER = _measure_sole_owner()


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
    raise ValueError(f"{name} must have {n_out} elements (one per filter) or be a scalar, got shape {b.shape}")


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
        compute_dtype(x, W, self.b, names=("x", "W", "b"))  # rejects complex/object parameters
        b = _as_input(self.b, "b")
        if b.size not in (1, W.shape[1]) or b.ndim > 2:
            raise ValueError(f"b must have {W.shape[1]} elements (one per output) or be a scalar, got shape {b.shape}")
        n_features = int(np.prod(x.shape[1:], dtype=np.int64))
        if n_features != W.shape[0]:
            raise ValueError(
                f"x has {n_features} features per sample (shape {x.shape}) but W expects "
                f"{W.shape[0]} (W shape {W.shape})"
            )
        x2d = x.reshape(x.shape[0], n_features)
        self.original_x_shape = x.shape
        self.x = x2d
        return np.dot(x2d, W) + self.b

    def backward(self, dout):
        _require_forward(self, "x")
        W = _as_input(self.W, "W")
        dout = _check_dout(dout, (self.x.shape[0], W.shape[1]), self)
        dx = np.dot(dout, W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax then mean cross-entropy. ``t``: labels ``(N,)``/``(N, 1)`` or one-hot ``(N, K)``."""

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
        dx[np.arange(batch_size), _label_indices(self.t, batch_size)] -= 1
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

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, *,
                 per_channel=False):
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
        self._results = {}  # the last output and input gradient, recycled once released

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
        dtype = compute_dtype(x, self.gamma, self.beta, names=("x", "gamma", "beta"))
        if self.running_mean is None:
            self.running_mean = np.zeros(n_stats, dtype=dtype)
            self.running_var = np.zeros(n_stats, dtype=dtype)
        if train_flg:
            out, _, mean64, var64, std64 = nnkernels.batchnorm_forward(
                xv, self.gamma, self.beta, self.eps, return_xn=False, stats_dtype=np.float64,
                out=_previous_result(self._results, "out", xv.shape, dtype))
            _keep_result(self._results, "out", out)
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
        dv = self._view(dout)
        dx_out = None
        if "dx" in self._results:  # a large previous dx: recycle it if released
            dtype = compute_dtype(dv, self._x, self.gamma, names=("dout", "x", "gamma"))
            dx_out = _previous_result(self._results, "dx", dv.shape, dtype)
        dx, dgamma, dbeta = nnkernels.batchnorm_backward_from_input(
            dv, self._x, self._mean64, self._std64, self.gamma, out=dx_out)
        _keep_result(self._results, "dx", dx)
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx.reshape(self.input_shape)


#: bytes of input-gradient columns a Convolution backward handles at once
_BACKWARD_CHUNK_BYTES = 8 << 20


def _unkept_chunk(n_samples, per_sample, threads):
    """Samples per chunk when a batch's columns are not kept: each thread then holds a
    column chunk and an input-gradient chunk of this many samples (forward uses the first,
    backward both, so the same buffers serve), together within the workspace bound, at
    least one sample each."""
    return max(1, min(conv_chunk_size(n_samples, per_sample) // (2 * threads),
                      _BACKWARD_CHUNK_BYTES // per_sample))


#: None: each convolution picks its route (``_fused_route``); "kernels" or "matmul" forces
#: one wherever the fused kernels are available (for tests and tools/conv_routes.py)
_CONV_ROUTE = None


def _fused_route(parts, macs):
    """Whether a convolution takes the fused kernels. Where they are available: when its
    samples fill every thread and it has at least ``SPLIT_MIN_MACS`` multiply-adds. A
    batch of fewer samples than threads takes the matmul route, which threads the column
    kernel and BLAS within a sample (the fused kernels give each thread whole samples), and
    so does a small convolution, which there runs single-threaded twins without starting
    the thread pool (the fused kernels always launch it: about 2 us under TBB, 125 us under
    workqueue)."""
    if not nnkernels.conv_kernels_available():
        return False
    if _CONV_ROUTE is not None:
        return _CONV_ROUTE == "kernels"
    return macs >= _products.SPLIT_MIN_MACS and len(parts) >= nnkernels.get_num_threads()


class Convolution:
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` by ``W`` ``(FN, C, FH, FW)``.

    Output ``(N, FN, out_h, out_w)``, ``out = (H + 2*pad - FH)//stride + 1``. Computed per
    sample through its columns (``C*FH*FW, out_h*out_w``) and matrix products, so the result
    is NCHW without a transpose, each thread taking a share of the samples. Where NumPy's
    BLAS is its OpenBLAS wheel build, a batch that fills every thread with work (at least
    4M multiply-adds) runs forward and backward as one kernel each
    (``nnkernels.conv_forward`` / ``conv_backward``): only a sample's columns per thread
    exist at a time, rebuilt in ``backward`` (``col`` stays None). Otherwise the columns go
    through ``nnkernels.im2col_per_sample`` and ``numpy.matmul`` on Python threads
    (``nnlayers._products``); a batch's column matrix is then kept from forward to
    backward unless it exceeds the workspace limit (``nnlayers.set_workspace_limit``; by
    default matrices above 16 MiB are processed as under a 4 MiB bound), when each thread
    takes its samples in chunks and ``col`` is None. Both routes make the same BLAS calls
    per sample and sum over samples afterwards: the results do not depend on the thread
    count. The layer keeps its last output and input gradient and writes the next ones
    into them once nothing else refers to them (no variable, no view), sparing fresh
    arrays' page faults.
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col = None
        self.dW = None
        self.db = None
        self._out_hw = None
        self._geometry = None
        self._dtype = None
        self._buffers = {}
        self._results = {}  # the last output and input gradient, recycled once released

    def _filter_shape(self):
        shape = np.shape(self.W)
        if len(shape) != 4:
            raise ValueError(f"W must be 4-D (FN, C, FH, FW), got shape {shape}")
        return shape

    def forward(self, x):
        x = _as_input(x)
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D (N, C, H, W), got shape {x.shape}")
        FN, C, FH, FW = self._filter_shape()
        if x.shape[1] != C:
            raise ValueError(f"x has {x.shape[1]} channels (shape {x.shape}) but W expects {C} (W shape {np.shape(self.W)})")
        stride = check_int(self.stride, "stride", minimum=1)
        pad = check_int(self.pad, "pad", minimum=0)
        out_h, out_w = nnkernels.conv_output_shape(x.shape, FH, FW, stride, pad)
        dtype = compute_dtype(x, self.W, self.b, names=("x", "W", "b"))
        xc = as_float_array(x, "x", dtype=dtype)
        Wm = np.asarray(self.W, dtype=dtype).reshape(FN, C * FH * FW)
        bias = _bias_column(self.b, FN, dtype)
        N = x.shape[0]
        K, P = C * FH * FW, out_h * out_w
        out = self._result("out", (N, FN, P), dtype)
        parts = sample_parts(0, N, N * FN * K * P)
        if _fused_route(parts, N * FN * K * P):
            nnkernels.conv_forward(xc, Wm.reshape(FN, C, FH, FW), bias, stride, pad, out=out,
                                   n_parts=len(parts))
            col = None
            self._drop_matmul_buffers()
        else:
            col = self._forward_by_matmul(xc, Wm, bias, (FH, FW, stride, pad), out, parts)
        self.x = xc
        self.col = col
        self._out_hw = (out_h, out_w)
        self._geometry = (stride, pad)
        self._dtype = dtype
        return out.reshape(N, FN, out_h, out_w)

    def _forward_by_matmul(self, xc, Wm, bias, window, out, parts):
        """Forward through ``im2col_per_sample`` and ``numpy.matmul`` (where the fused
        kernels are unavailable); returns the kept column matrix, or None when the
        workspace bound made the threads take their samples in chunks."""
        FH, FW, stride, pad = window
        N, K, P = xc.shape[0], Wm.shape[1], out.shape[2]
        dtype = out.dtype
        per_sample = K * P * dtype.itemsize
        if conv_chunk_size(N, per_sample) >= N:
            col = self._buffer("col", (N, K, P), dtype)
            steps = [None] * len(parts)
        else:  # workspace bound: each thread takes its share chunk by chunk, columns not kept
            col = None
            chunk = _unkept_chunk(N, per_sample, len(parts))
            steps = [(chunk, self._buffer(f"work{i}", (chunk, K, P), dtype))
                     for i in range(len(parts))]

        def forward_part(index, lo, hi):
            step, work = steps[index] or (max(1, hi - lo), None)
            for n0 in range(lo, hi, step):
                n1 = min(hi, n0 + step)
                buffer = col[n0:n1] if work is None else work[: n1 - n0]
                cols = nnkernels.im2col_per_sample(xc[n0:n1], FH, FW, stride, pad, out=buffer)
                np.matmul(Wm, cols, out=out[n0:n1])
                out[n0:n1] += bias

        run_parts(parts, forward_part)
        return col

    def _buffer(self, name, shape, dtype):
        """A scratch array kept between calls: reusing it spares the page faults of a
        fresh allocation (hundreds of MB per step at large shapes)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            self._buffers.pop(name, None)
            buf = empty_result(shape, dtype)
            self._buffers[name] = buf
        return buf

    def _drop_matmul_buffers(self):
        """Forget the matmul route's scratch (a previous batch may have taken that route):
        the fused kernels use only ``dW_per_sample`` of it."""
        for name in [name for name in self._buffers if name != "dW_per_sample"]:
            del self._buffers[name]

    def _drop_thread_buffers(self, threads):
        """Forget the per-thread scratch of threads beyond ``threads`` (after the thread
        count was lowered), so that it does not stay allocated. Called from backward, which
        splits at least as readily as forward (twice the work)."""
        for prefix in ("work", "dcols"):
            index = threads
            while self._buffers.pop(f"{prefix}{index}", None) is not None:
                index += 1

    def _result(self, name, shape, dtype):
        """A fresh array for a result, or the previous call's when nobody holds it any more
        (no variable, no view): that spares the page faults a fresh array of many MB costs."""
        array = _previous_result(self._results, name, shape, dtype)
        if array is None:
            array = empty_result(shape, dtype)
            _keep_result(self._results, name, array)
        return array

    def backward(self, dout):
        _require_forward(self, "x")
        FN, C, FH, FW = self._filter_shape()
        N = self.x.shape[0]
        out_h, out_w = self._out_hw
        stride, pad = self._geometry
        dout = _check_dout(dout, (N, FN, out_h, out_w), self)
        dtype = np.result_type(self._dtype, compute_dtype(dout))
        K, P = C * FH * FW, out_h * out_w
        d = as_float_array(dout, "dout", dtype=dtype).reshape(N, FN, P)
        Wm = np.asarray(self.W, dtype=dtype).reshape(FN, K)
        xc = self.x if self.x.dtype == dtype else self.x.astype(dtype)
        parts = sample_parts(0, N, 2 * N * FN * K * P)
        dx = self._result("dx", self.x.shape, dtype)
        dW_per_sample = self._buffer("dW_per_sample", (N, K, FN), dtype)
        if _fused_route(parts, 2 * N * FN * K * P):
            dx, self.dW, self.db = nnkernels.conv_backward(
                d, xc, Wm.reshape(FN, C, FH, FW), stride, pad, dx=dx,
                dW_per_sample=dW_per_sample, n_parts=len(parts))
            return dx
        self._backward_by_matmul(xc, Wm, d, (FH, FW, stride, pad), parts, dx, dW_per_sample)
        return dx

    def _backward_by_matmul(self, xc, Wm, d, window, parts, dx, dW_per_sample):
        """Backward through columns, ``numpy.matmul`` and ``col2im_per_sample`` (where the
        fused kernels are unavailable): fills ``dx`` and sets ``dW`` and ``db``."""
        FH, FW, stride, pad = window
        N, FN, P = d.shape
        K = Wm.shape[1]
        C = xc.shape[1]
        dtype = dx.dtype
        col = self.col if (self.col is not None and self.col.dtype == dtype) else None
        # Each thread takes a share of the samples; within it, the input gradient's columns
        # go through a small reused buffer a few samples at a time. dW's per-sample products
        # are summed once all are done, so the sum does not depend on the shares.
        self._drop_thread_buffers(len(parts))
        per_sample = K * P * dtype.itemsize
        # the workspace bound covers every thread's buffers: dcols, plus the recomputed
        # columns when the forward did not keep them
        if col is None:
            chunk = _unkept_chunk(N, per_sample, len(parts))
        else:
            chunk = max(1, min(conv_chunk_size(N, per_sample) // len(parts),
                               _BACKWARD_CHUNK_BYTES // per_sample))
        db_per_sample = self._buffer("db_per_sample", (N, FN), dtype)
        scratch = [(self._buffer(f"dcols{i}", (chunk, K, P), dtype),
                    None if col is not None else self._buffer(f"work{i}", (chunk, K, P), dtype))
                   for i in range(len(parts))]

        def backward_part(index, lo, hi):
            dcols, work = scratch[index]
            for n0 in range(lo, hi, chunk):
                n1 = min(hi, n0 + chunk)
                if col is not None:
                    cols = col[n0:n1]
                else:
                    cols = nnkernels.im2col_per_sample(xc[n0:n1], FH, FW, stride, pad,
                                                       out=work[: n1 - n0])
                # (K, P) @ (P, FN) per sample: OpenBLAS runs this orientation up to 2x faster
                # than (FN, P) @ (P, K) at these sizes (float32, tools/profile_conv.py)
                np.matmul(cols, d[n0:n1].transpose(0, 2, 1), out=dW_per_sample[n0:n1])
                np.sum(d[n0:n1], axis=2, out=db_per_sample[n0:n1])
                np.matmul(Wm.T, d[n0:n1], out=dcols[: n1 - n0])
                nnkernels.col2im_per_sample(dcols[: n1 - n0], (n1 - n0, C, *self.x.shape[2:]),
                                            FH, FW, stride, pad, out=dx[n0:n1])

        run_parts(parts, backward_part)
        dW = dW_per_sample.sum(axis=0).T
        self.db = db_per_sample.sum(axis=0)
        self.dW = dW.reshape(FN, C, FH, FW)


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
        out, self._argmax = nnkernels.maxpool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x = x
        return out

    def backward(self, dout):
        _require_forward(self, "_argmax")
        dout = _check_dout(dout, self._argmax.shape, self)
        return nnkernels.maxpool_backward(
            dout, self._argmax, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad
        )
