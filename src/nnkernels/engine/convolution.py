"""The convolution engine: one object for a convolution's two passes.

:class:`ConvolutionEngine` holds a convolution's stride, padding and route; its
``forward(x, W, b)`` validates the inputs once, computes the geometry, picks the route and
keeps what ``backward(dout, W)`` needs. ``nnlayers.Convolution`` is the book's API over it.

Two routes compute a convolution:

``"kernels"``
    The fused kernels (:mod:`nnkernels.kernels.convolution`): per sample, columns, products
    on the library's BLAS and folding back in one GIL-free kernel, each thread taking
    chunks of the samples. Only a few samples' columns exist at a time; backward rebuilds
    them. Available where the library's BLAS is.
``"matmul"``
    The columns of the batch (:func:`nnkernels.im2col_per_sample`), one product per sample
    (:func:`nnkernels.matmul`) and :func:`nnkernels.col2im_per_sample`, each thread taking
    a share of the samples. The batch's columns are kept from forward to backward unless
    they exceed the workspace limit. Where the library's BLAS is missing, this is the route
    taken, on NumPy's ``matmul`` in one part (NumPy's BLAS then threads as it does).

``"auto"`` takes the fused kernels where they are available; convolutions of fewer than the
``split_min_macs`` setting's multiply-adds run in the calling thread alone. Both routes
make the same products per sample and sum over samples afterwards, so results do not
depend on the route or the thread count.

Scratch comes from the engine's :class:`ScratchPool`: each call takes its own and gives it
back when it ends, so concurrent ``forward`` calls never share one. Results (``out``,
``dx``, ``dW``, ``db``) and kept columns are fresh arrays, never written again.
"""

import dataclasses
import threading

import numpy as np

from .. import config
from ..kernels import products
from ..kernels.columns import Geometry, col2im_per_sample, im2col, im2col_per_sample
from ..kernels.convolution import fused_backward, fused_forward
from ..runtime import blas
from ..runtime.helpers import run_parts
from ..runtime.partition import (
    conv_chunk_size,
    get_num_threads,
    kept_chunk,
    unkept_chunk,
)
from ..validation import as_float_array, check_int, compute_dtype, empty_result, real_array

__all__ = ["ConvolutionEngine", "ScratchPool", "choose_route", "CONV_ROUTES"]

CONV_ROUTES = config.CONV_ROUTES


class ScratchPool:
    """Scratch arrays reused between calls; each call takes its own, never another's.

    Holds at most ``capacity`` free arrays, the most recently given back.
    """

    def __init__(self, capacity=8):
        self._free = []
        self._lock = threading.Lock()
        self._capacity = capacity

    def take(self, shape, dtype):
        """A C-contiguous array of ``shape`` and ``dtype`` (contents undefined)."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        with self._lock:
            for index, array in enumerate(self._free):
                if array.shape == shape and array.dtype == dtype:
                    return self._free.pop(index)
        return empty_result(shape, dtype)

    def give_back(self, arrays):
        """Return arrays from :meth:`take` once no thread uses them any more."""
        with self._lock:
            self._free.extend(array for array in arrays if array is not None)
            del self._free[: -self._capacity]

    def clear(self):
        """Let go of every free array."""
        with self._lock:
            self._free.clear()


@dataclasses.dataclass
class Saved:
    """What a route's ``backward`` needs from its ``forward``.

    Attributes
    ----------
    x : ndarray, (N, C, H, W)
        The input, C-contiguous, of the computation's dtype.
    geometry : Geometry
    filter_shape : tuple
        ``W``'s shape at forward.
    col : ndarray (N, C*FH*FW, OH*OW) or None
        The columns of every sample when forward kept them (a fresh array).
    """

    x: np.ndarray
    geometry: Geometry
    filter_shape: tuple
    col: np.ndarray = None


def _filter_matrix(weights):
    """``(FN, C, FH, FW)`` filters as the ``(FN, C*FH*FW)`` matrix (a view)."""
    fn, c, fh, fw = weights.shape
    return weights.reshape(fn, c * fh * fw)


class _KernelsRoute:
    name = "kernels"

    def available(self):
        return blas.available()

    def forward(self, x, weights, bias, saved, pool, parts):
        """``(N, FN, OH*OW)`` into a fresh array; ``weights`` ``(FN, C, FH, FW)`` and
        ``bias`` ``(FN,)`` of x's dtype."""
        g = saved.geometry
        wm = _filter_matrix(weights)
        out = empty_result((x.shape[0], wm.shape[0], g.out_h * g.out_w), x.dtype)
        fused_forward(x, wm, bias, g, parts, out)
        return out

    def backward(self, dout, weights, saved, pool, parts):
        """``(dx, dW, db)`` for ``dout`` ``(N, FN, OH*OW)`` of the saved input's dtype."""
        g, x = saved.geometry, saved.x
        wm = _filter_matrix(weights)
        dx = empty_result(x.shape, x.dtype)
        per_sample = pool.take((x.shape[0], wm.shape[1], wm.shape[0]), x.dtype)
        try:
            fused_backward(dout, x, wm, g, parts, dx, per_sample, saved.col)
            dW = per_sample.sum(axis=0).T.reshape(weights.shape)
        finally:
            pool.give_back([per_sample])
        return dx, dW, dout.sum(axis=2).sum(axis=0)


class _MatmulRoute:
    name = "matmul"

    def available(self):
        return True

    def forward(self, x, weights, bias, saved, pool, parts):
        """As :meth:`_KernelsRoute.forward`, through columns and matrix products."""
        g = saved.geometry
        n = x.shape[0]
        wm = _filter_matrix(weights)
        k, p = wm.shape[1], g.out_h * g.out_w
        out = empty_result((n, wm.shape[0], p), x.dtype)
        shares = _shares(n, parts)
        per_sample = k * p * x.dtype.itemsize
        if conv_chunk_size(n, per_sample) >= n:
            col, chunk = empty_result((n, k, p), x.dtype), None
            works = [None] * len(shares)
        else:  # each thread takes its share chunk by chunk; the columns are not kept
            col, chunk = None, unkept_chunk(n, per_sample, len(shares))
            works = [pool.take((chunk, k, p), x.dtype) for _ in shares]
        column = bias.reshape(-1, 1)

        def forward_part(index, lo, hi, stop):
            step = chunk or max(1, hi - lo)
            for n0 in range(lo, hi, step):
                if stop.is_set():
                    return
                n1 = min(hi, n0 + step)
                buffer = col[n0:n1] if col is not None else works[index][: n1 - n0]
                cols = im2col_per_sample(
                    x[n0:n1], g.filter_h, g.filter_w, g.stride, g.pad, out=buffer
                )
                products.product(wm, cols, out[n0:n1])
                out[n0:n1] += column

        try:
            run_parts(shares, forward_part)
        finally:
            pool.give_back(works)
        saved.col = col
        return out

    def backward(self, dout, weights, saved, pool, parts):
        """As :meth:`_KernelsRoute.backward`, through columns, matrix products and
        :func:`col2im_per_sample`."""
        g, x, col = saved.geometry, saved.x, saved.col
        n, fn, p = dout.shape
        wm = _filter_matrix(weights)
        k = wm.shape[1]
        dtype = x.dtype
        shares = _shares(n, parts)
        per_sample = k * p * dtype.itemsize
        if col is None:
            chunk = unkept_chunk(n, per_sample, len(shares))
        else:
            chunk = kept_chunk(n, per_sample, len(shares))
        dx = empty_result(x.shape, dtype)
        dw_per_sample = pool.take((n, k, fn), dtype)
        dcols = [pool.take((chunk, k, p), dtype) for _ in shares]
        works = [None if col is not None else pool.take((chunk, k, p), dtype) for _ in shares]

        def backward_part(index, lo, hi, stop):
            for n0 in range(lo, hi, chunk):
                if stop.is_set():
                    return
                n1 = min(hi, n0 + chunk)
                if col is not None:
                    cols = col[n0:n1]
                else:
                    cols = im2col_per_sample(
                        x[n0:n1],
                        g.filter_h,
                        g.filter_w,
                        g.stride,
                        g.pad,
                        out=works[index][: n1 - n0],
                    )
                # (K, P) @ (P, FN) per sample: OpenBLAS runs this orientation faster than
                # (FN, P) @ (P, K) at these sizes
                d = dout[n0:n1]
                products.product(cols, d.transpose(0, 2, 1), dw_per_sample[n0:n1])
                grad_cols = dcols[index][: n1 - n0]
                products.product(wm.T, d, grad_cols)
                col2im_per_sample(
                    grad_cols,
                    (n1 - n0, *x.shape[1:]),
                    g.filter_h,
                    g.filter_w,
                    g.stride,
                    g.pad,
                    out=dx[n0:n1],
                )

        try:
            run_parts(shares, backward_part)
            dW = dw_per_sample.sum(axis=0).T.reshape(weights.shape)
        finally:
            pool.give_back([dw_per_sample, *dcols, *works])
        return dx, dW, dout.sum(axis=2).sum(axis=0)


def _shares(n_samples, parts):
    """Shares of the samples over ``parts`` threads; one share where the library's BLAS is
    missing (NumPy's ``matmul`` then threads as it does)."""
    if parts <= 1 or not blas.available():
        return [(0, n_samples)]
    return [(n_samples * i // parts, n_samples * (i + 1) // parts) for i in range(parts)]


KERNELS = _KernelsRoute()
MATMUL = _MatmulRoute()
_ROUTES = {route.name: route for route in (KERNELS, MATMUL)}


def choose_route(requested, n_samples, macs):
    """``(route, threads)``: the route a convolution takes and how many threads it uses
    (one below the ``split_min_macs`` setting's multiply-adds).

    Parameters
    ----------
    requested : {"auto", "kernels", "matmul"} or None
        ``None`` reads the ``conv_route`` setting. ``"auto"`` takes the fused kernels where
        they are available, else the matmul route.
    n_samples : int
        Samples in the batch.
    macs : int
        Multiply-adds of the forward pass.

    Raises
    ------
    RuntimeError
        When ``"kernels"`` is requested where they are not available.
    """
    if requested is None:
        requested = config.get("conv_route")
    threads = 1 if macs < config.get("split_min_macs") else get_num_threads()
    if requested == "auto":
        return (KERNELS if KERNELS.available() else MATMUL), threads
    route = _ROUTES[requested]
    if not route.available():
        raise RuntimeError(
            "the fused convolution kernels (route 'kernels') need the library's BLAS "
            f"({blas.describe()['why']}); use route 'auto' or 'matmul'"
        )
    return route, threads


class ConvolutionEngine:
    """A convolution's forward and backward passes, with what the backward needs kept.

    Parameters
    ----------
    stride : int, default 1
    pad : int, default 0
    route : {"auto", "kernels", "matmul"} or None, default None
        ``None`` follows the ``conv_route`` setting (see the module docstring).

    The attributes ``stride``, ``pad`` and ``route`` may be changed between calls; each
    ``forward`` reads them. Like the book's layers, an engine keeps the last forward's input
    for the next ``backward``: one thread's ``forward``/``backward`` pairs must not
    interleave with another's on the same engine, while concurrent ``forward`` calls each
    get their own output.

    Examples
    --------
    >>> engine = ConvolutionEngine(stride=1, pad=1)
    >>> x = np.ones((2, 3, 8, 8), np.float32)
    >>> W = np.ones((4, 3, 3, 3), np.float32)
    >>> engine.forward(x, W, 0.0).shape
    (2, 4, 8, 8)
    >>> dx, dW, db = engine.backward(np.ones((2, 4, 8, 8), np.float32), W)
    """

    def __init__(self, stride=1, pad=0, route=None):
        self.stride = stride
        self.pad = pad
        self.route = route
        self._saved = None
        self._route = None
        self._scratch = None
        self._book_col = None

    @property
    def route(self):
        return self._requested_route

    @route.setter
    def route(self, value):
        if value is not None and value not in CONV_ROUTES:
            raise ValueError(
                f"route must be one of {', '.join(map(repr, CONV_ROUTES))} or None, got {value!r}"
            )
        self._requested_route = value

    # -------------------------------------------------------------- state
    @property
    def input(self):
        """The last forward's input as computed on: C-contiguous, of the computation's float
        dtype (``x`` itself when it already was); None before a forward."""
        return None if self._saved is None else self._saved.x

    @property
    def geometry(self):
        """The last forward's :class:`~nnkernels.kernels.columns.Geometry` (or None)."""
        return None if self._saved is None else self._saved.geometry

    @property
    def route_taken(self):
        """The name of the route the last forward took (and its backward takes), or None."""
        return None if self._route is None else self._route.name

    def columns(self):
        """The last input's columns in the book's layout ``(N*out_h*out_w, C*FH*FW)``: a new
        array per forward, computed when first asked; None before a forward."""
        if self._book_col is None and self._saved is not None:
            g = self._saved.geometry
            self._book_col = im2col(self._saved.x, g.filter_h, g.filter_w, g.stride, g.pad)
        return self._book_col

    def _pool(self):
        pool = self._scratch
        if pool is None:
            pool = self._scratch = ScratchPool()
        return pool

    def __getstate__(self):
        # scratch, kept columns and the book-layout columns are rebuilt when needed
        state = dict(self.__dict__, _scratch=None, _book_col=None)
        if self._saved is not None and self._saved.col is not None:
            state["_saved"] = dataclasses.replace(self._saved, col=None)
        return state

    def __copy__(self):
        # a copy takes its own scratch; the last forward's record is shared, never written
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__, _scratch=None)
        return copied

    # -------------------------------------------------------------- passes
    def forward(self, x, W, b):
        """The convolution of ``x`` ``(N, C, H, W)`` by ``W`` ``(FN, C, FH, FW)`` plus ``b``.

        ``b`` has ``FN`` elements or is a scalar. Returns a new C-contiguous
        ``(N, FN, out_h, out_w)`` array of NumPy's promoted float dtype of the three
        (float32 or float64), ``out_h = (H + 2*pad - FH)//stride + 1``. Inputs are not
        modified.
        """
        x = real_array(x, "x")
        W = real_array(W, "W")
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D (N, C, H, W), got shape {x.shape}")
        if W.ndim != 4:
            raise ValueError(f"W must be 4-D (FN, C, FH, FW), got shape {W.shape}")
        n_filters, channels, fh, fw = W.shape
        if x.shape[1] != channels:
            raise ValueError(
                f"x has {x.shape[1]} channels (shape {x.shape}) but W expects {channels} "
                f"(W shape {W.shape})"
            )
        stride = check_int(self.stride, "stride", minimum=1)
        pad = check_int(self.pad, "pad", minimum=0)
        g = Geometry.of(x.shape, fh, fw, stride, pad)
        dtype = compute_dtype(x, W, b, names=("x", "W", "b"))
        bias = self._bias(b, n_filters, dtype)
        xc = as_float_array(x, "x", dtype=dtype)
        weights = as_float_array(W, "W", dtype=dtype)
        n = x.shape[0]
        route, threads = choose_route(
            self.route, n, n * n_filters * channels * fh * fw * g.out_h * g.out_w
        )
        saved = Saved(xc, g, W.shape)
        out = route.forward(xc, weights, bias, saved, self._pool(), max(1, min(threads, n)))
        self._saved, self._route, self._book_col = saved, route, None
        return out.reshape(n, n_filters, g.out_h, g.out_w)

    @staticmethod
    def _bias(b, n_filters, dtype):
        b = real_array(b, "b")
        if b.size == n_filters:
            return np.ascontiguousarray(b.reshape(-1), dtype=dtype)
        if b.size == 1:
            return np.full(n_filters, b.reshape(()), dtype=dtype)
        raise ValueError(
            f"b must have {n_filters} elements (one per filter) or be a scalar, got shape {b.shape}"
        )

    def backward(self, dout, W):
        """Gradients of the last :meth:`forward`: ``(dx, dW, db)``.

        ``dout`` has the forward output's shape; ``W`` is the filters now (they must have
        the shape they had at forward; their values may have changed). ``dx`` has the
        input's shape, ``dW`` ``W``'s, ``db`` ``(FN,)``; all new arrays of NumPy's promoted
        float dtype of the forward's computation and ``dout``.
        """
        if self._saved is None:
            raise ValueError("backward() called before forward()")
        saved = self._saved
        W = real_array(W, "W")
        if W.shape != saved.filter_shape:
            raise ValueError(
                f"W has shape {W.shape} but had {saved.filter_shape} at forward; the "
                "gradient of a convolution is taken with the filters it ran with"
            )
        g = saved.geometry
        n, n_filters = saved.x.shape[0], saved.filter_shape[0]
        dout = real_array(dout, "dout")
        want = (n, n_filters, g.out_h, g.out_w)
        if dout.shape != want:
            raise ValueError(
                f"dout must have the shape of the last forward output {want}, got {dout.shape}"
            )
        dtype = np.result_type(saved.x.dtype, compute_dtype(dout, W, names=("dout", "W")))
        if dtype != saved.x.dtype:  # a float64 dout after a float32 forward
            saved = Saved(saved.x.astype(dtype), g, saved.filter_shape)
        d = as_float_array(dout, "dout", dtype=dtype).reshape(n, n_filters, g.out_h * g.out_w)
        weights = as_float_array(W, "W", dtype=dtype)
        macs = 2 * d.size * int(np.prod(saved.filter_shape[1:]))
        _, threads = choose_route(self._route.name, n, macs)
        return self._route.backward(d, weights, saved, self._pool(), max(1, min(threads, n)))
