"""The two ways a convolution runs, behind one interface.

``KERNELS``
    :func:`nnkernels.conv_forward` / :func:`nnkernels.conv_backward`: one kernel each way,
    which builds a sample's columns, multiplies them by calling NumPy's OpenBLAS from compiled
    code and folds the gradient back. Only a sample's columns per thread exist at a time;
    backward rebuilds them. Available where NumPy's BLAS is its OpenBLAS wheel build.
``MATMUL``
    :func:`nnkernels.im2col_per_sample`, ``numpy.matmul`` and
    :func:`nnkernels.col2im_per_sample`, each thread taking a share of the samples
    (:mod:`nnkernels.sample_parts`). The batch's columns are kept from forward to backward
    unless they exceed the workspace limit, when each thread takes its samples in chunks.

Both make the same BLAS calls per sample and sum over samples afterwards, so the results do
not depend on the route or the thread count. A route's ``forward`` returns the output and a
:class:`Saved` record that its ``backward`` takes; :func:`choose_route` picks one per forward.

Scratch arrays come from a :class:`ScratchPool` owned by the caller: each call takes its
own and gives them back when it ends, so concurrent calls never share one. Results
(``out``, ``dx``, ``dW``, ``db``) and kept columns are fresh arrays, never written again.
"""

import threading
from dataclasses import dataclass

import numpy as np

from . import _blas, config
from ._validation import empty_result
from .columns import col2im_per_sample, im2col_per_sample
from .convolution import conv_backward, conv_forward
from .sample_parts import run_parts, sample_parts
from .threads import get_num_threads

__all__ = ["Saved", "ScratchPool", "KERNELS", "MATMUL", "choose_route", "conv_chunk_size"]

#: bytes of input-gradient columns a matmul-route backward handles at once per thread
BACKWARD_CHUNK_BYTES = 8 << 20


def conv_chunk_size(n_samples, bytes_per_sample):
    """How many samples' columns a convolution holds at once under the workspace limit.

    Parameters
    ----------
    n_samples : int
        Samples in the batch.
    bytes_per_sample : int
        Bytes of one sample's column matrix.
    """
    n_samples = max(int(n_samples), 1)
    if bytes_per_sample <= 0:
        return n_samples
    limit = config.get("workspace_limit")
    if limit is None:
        if n_samples * bytes_per_sample <= config.AUTO_CHUNK_ABOVE:
            return n_samples
        limit = config.AUTO_WORKSPACE
    return max(1, min(n_samples, limit // bytes_per_sample))


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


@dataclass(frozen=True)
class Geometry:
    """A convolution's window: filter size, stride, padding and output size."""

    filter_h: int
    filter_w: int
    stride: int
    pad: int
    out_h: int
    out_w: int


@dataclass
class Saved:
    """What a route's ``backward`` needs from its ``forward``.

    Attributes
    ----------
    x : ndarray, (N, C, H, W)
        The input, C-contiguous, of the computation's dtype.
    geometry : Geometry
    col : ndarray (N, C*FH*FW, OH*OW) or None
        The columns of every sample when forward kept them (a fresh array).
    """

    x: np.ndarray
    geometry: Geometry
    col: np.ndarray = None


class _KernelsRoute:
    name = "kernels"

    def available(self):
        return _blas.AVAILABLE

    def forward(self, x, weights, bias, geometry, pool):
        """``weights @ columns(x[n]) + bias`` per sample: ``(N, FN, OH*OW)`` and a
        :class:`Saved`. ``weights`` ``(FN, C, FH, FW)``; ``bias`` ``(FN,)`` of x's dtype."""
        g = geometry
        out = conv_forward(x, weights, bias, g.stride, g.pad, n_parts=_n_parts(x.shape[0]))
        n, fn = out.shape[:2]
        return out.reshape(n, fn, g.out_h * g.out_w), Saved(x, geometry)

    def backward(self, dout, weights, saved, pool):
        """``(dx, dW, db)`` for ``dout`` ``(N, FN, OH*OW)`` of the saved input's dtype."""
        g, x = saved.geometry, saved.x
        per_sample = pool.take(
            (x.shape[0], _filter_matrix(weights).shape[1], weights.shape[0]), x.dtype
        )
        try:
            return conv_backward(
                dout,
                x,
                weights,
                g.stride,
                g.pad,
                dW_per_sample=per_sample,
                n_parts=_n_parts(x.shape[0]),
            )
        finally:
            pool.give_back([per_sample])


def _filter_matrix(weights):
    """``(FN, C, FH, FW)`` filters as the ``(FN, C*FH*FW)`` matrix (a view)."""
    fn, c, fh, fw = weights.shape
    return weights.reshape(fn, c * fh * fw)


def _n_parts(n_samples):
    return max(1, min(get_num_threads(), n_samples))


def _unkept_chunk(n_samples, per_sample, threads):
    """Samples per chunk when a batch's columns are not kept: each thread then holds a
    column chunk and an input-gradient chunk, together within the workspace limit."""
    return max(
        1,
        min(
            conv_chunk_size(n_samples, per_sample) // (2 * threads),
            BACKWARD_CHUNK_BYTES // per_sample,
        ),
    )


class _MatmulRoute:
    name = "matmul"

    def available(self):
        return True

    def forward(self, x, weights, bias, geometry, pool):
        """As :meth:`_KernelsRoute.forward`, through columns and ``numpy.matmul``."""
        g = geometry
        n = x.shape[0]
        wm = _filter_matrix(weights)
        k, p = wm.shape[1], g.out_h * g.out_w
        out = empty_result((n, wm.shape[0], p), x.dtype)
        parts = sample_parts(0, n, n * wm.shape[0] * k * p)
        per_sample = k * p * x.dtype.itemsize
        if conv_chunk_size(n, per_sample) >= n:
            col, chunk = empty_result((n, k, p), x.dtype), None
            works = [None] * len(parts)
        else:  # each thread takes its share chunk by chunk; the columns are not kept
            col, chunk = None, _unkept_chunk(n, per_sample, len(parts))
            works = [pool.take((chunk, k, p), x.dtype) for _ in parts]
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
                np.matmul(wm, cols, out=out[n0:n1])
                out[n0:n1] += column

        try:
            run_parts(parts, forward_part)
        finally:
            pool.give_back(works)
        return out, Saved(x, geometry, col)

    def backward(self, dout, weights, saved, pool):
        """As :meth:`_KernelsRoute.backward`, through columns, ``numpy.matmul`` and
        :func:`col2im_per_sample`."""
        g, x, col = saved.geometry, saved.x, saved.col
        n, fn, p = dout.shape
        wm = _filter_matrix(weights)
        k = wm.shape[1]
        dtype = x.dtype
        parts = sample_parts(0, n, 2 * n * fn * k * p)
        per_sample = k * p * dtype.itemsize
        if col is None:
            chunk = _unkept_chunk(n, per_sample, len(parts))
        else:
            chunk = max(
                1,
                min(
                    conv_chunk_size(n, per_sample) // len(parts), BACKWARD_CHUNK_BYTES // per_sample
                ),
            )
        dx = empty_result(x.shape, dtype)
        dw_per_sample = pool.take((n, k, fn), dtype)
        db_per_sample = pool.take((n, fn), dtype)
        dcols = [pool.take((chunk, k, p), dtype) for _ in parts]
        works = [None if col is not None else pool.take((chunk, k, p), dtype) for _ in parts]

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
                np.matmul(cols, dout[n0:n1].transpose(0, 2, 1), out=dw_per_sample[n0:n1])
                np.sum(dout[n0:n1], axis=2, out=db_per_sample[n0:n1])
                grad_cols = dcols[index][: n1 - n0]
                np.matmul(wm.T, dout[n0:n1], out=grad_cols)
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
            run_parts(parts, backward_part)
            dW = dw_per_sample.sum(axis=0).T.reshape(weights.shape)
            db = db_per_sample.sum(axis=0)
        finally:
            pool.give_back([dw_per_sample, db_per_sample, *dcols, *works])
        return dx, dW, db


KERNELS = _KernelsRoute()
MATMUL = _MatmulRoute()
_ROUTES = {route.name: route for route in (KERNELS, MATMUL)}


def choose_route(requested, n_samples, macs):
    """The route a convolution takes.

    Parameters
    ----------
    requested : {"auto", "kernels", "matmul"} or None
        ``None`` reads the ``conv_route`` setting. ``"auto"`` takes the fused kernels where
        they are available, the batch fills every thread and it has at least the
        ``split_min_macs`` setting's multiply-adds; else the matmul route, which threads
        within a sample and runs small convolutions single-threaded without starting the
        kernels' thread pool.
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
    if requested == "auto":
        fused = (
            KERNELS.available()
            and macs >= config.get("split_min_macs")
            and n_samples >= get_num_threads()
        )
        return KERNELS if fused else MATMUL
    route = _ROUTES[requested]
    if not route.available():
        raise RuntimeError(
            "the fused convolution kernels (route 'kernels') need NumPy's OpenBLAS wheel "
            "build, which this process does not have; use route 'auto' or 'matmul' "
            "(nnkernels.show_config() says which BLAS was found)"
        )
    return route
