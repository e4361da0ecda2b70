"""Batch normalisation reductions: per feature on ``(N, D)``, per channel on ``(N, C, H, W)``.

Statistics are accumulated in float64 whatever the compute dtype, by one formula: shifted
sums with the plain mean ``m0 = sum(x) / n`` of a first pass as the shift. The second pass
sums ``r = sum(x - m0)`` and ``q = sum((x - m0)**2)``, and

    mean = m0 + r / n,    var = (q - r * r / n) / n

(the corrected two-pass algorithm of Chan, Golub and LeVeque: ``r`` is the first pass's
rounding error, which the correction takes out of both results). The variance's relative
error is then about ``n * u + (n * u)**2 * (1 + mean**2 / var)`` with ``u = 2**-53``, where
one pass of sums and squares would give ``n * u * (1 + mean**2 / var)``: the offset of the
data hardly matters.

Reductions are race-free and deterministic: the rows (``(N, D)``) or images
(``(N, C, H, W)``) are cut into a fixed number of equal runs that depends only on the
input's shape and dtype (never on the number of threads, on scheduling, or on which path
runs); the sums of each run start from zero and are added in run order.

* ``(N, D)``: a run sums its rows in order with a contiguous inner loop over features
  (each feature's sum is independent of the others).
* ``(N, C, H, W)``: a run sums the contiguous ``H*W`` values of each of its images in a
  fixed set of lanes, added in lane order at the end of the run.

Two paths run the same block-level helpers: the fused kernels (one launch; a task owns a
block of features or one channel and makes every pass over it, while it stays in cache),
for many features/channels or under ``parallel_threshold`` elements; and the split kernels
(sums of every (run, feature block) or (run, channel) as tasks, merged in run order, then
one launch that normalises), for few features/channels over many rows/images. Both apply
the same float64 operations in the same order, so they return the same bits: results
depend on the shape and dtype only, never on the path, the threshold or the thread count.
"""

import math
import numbers

import numpy as np

from .. import config
from ..registry import examples
from ..runtime.jit import inner_function, threaded_kernel
from ..runtime.partition import run_shares
from ..validation import as_float_array, checked_out, compute_dtype
from . import _examples

__all__ = [
    "batchnorm_forward",
    "batchnorm_inference",
    "batchnorm_backward",
    "batchnorm_backward_from_input",
]

#: bytes of each row a task of the (N, D) kernels covers: the task reads N runs of this
#: length, and runs of 2 KiB let the hardware prefetcher keep up when the array comes from
#: DRAM (docs/performance.md, "Row runs of 2 KiB")
_FEATURE_BLOCK_BYTES = 2048
_MIN_TASK = 16384  # elements a task should reduce at least, when the shape allows
_TARGET_TASKS = 16  # split rows/images until about this many tasks exist
_LANES = 8  # independent partial sums per 3-D run (so the adds pipeline / vectorise)
_ROW_TASK = 4096  # elements a task of the split (N, D) normalise and backward covers at least
_PLAIN, _SHIFTED, _PAIRED = 0, 1, 2  # the forms of the sums (see _add_terms), as numbers


# ------------------------------------------------------------------ task grid
@inner_function(inline=True)
def _row_tasks(n, d):
    """Tasks of the split ``(N, D)`` normalise and backward: runs of rows of at least
    ``_ROW_TASK`` elements."""
    return min(n, max(1, (n * d) // _ROW_TASK))


def _feature_blocks(xv):
    """Tasks of the fused ``(N, D)`` kernels and the 2-D sums: blocks of features."""
    d = xv.shape[1]
    return -(-d // _feature_block(xv))


def _row_blocks(rows, other_tasks, row_elems):
    """Number of row (or image) runs: enough tasks for the threads, but not tiny ones."""
    if rows <= 1 or other_tasks == 0 or other_tasks >= _TARGET_TASKS:  # 0: no features
        return 1
    by_target = -(-_TARGET_TASKS // other_tasks)
    by_size = max(1, (rows * row_elems) // _MIN_TASK)
    return int(max(1, min(rows, by_target, by_size)))


def _runs(xv):
    """The runs both paths sum the kernel view ``xv`` (``(N, D)`` or ``(N, C, L)``) in."""
    if xv.size < 2 * _MIN_TASK:  # no two runs could have _MIN_TASK elements each
        return 1
    if xv.ndim == 2:
        n, d = xv.shape
        feature_block = _feature_block(xv)
        return _row_blocks(n, -(-d // feature_block), min(d, feature_block))
    n, channels, length = xv.shape
    return _row_blocks(n, channels, length)


@inner_function
def _run_bounds(r, n, n_runs):
    """First and past-the-end row of run ``r`` of ``n_runs`` equal runs of ``n`` rows."""
    return (r * n) // n_runs, ((r + 1) * n) // n_runs


@inner_function
def _feature_range(block, feature_block, d):
    """First feature and width of block ``block`` of ``feature_block`` features of ``d``."""
    j0 = block * feature_block
    return j0, min(d, j0 + feature_block) - j0


# ------------------------------------------------------------------ statistics
@inner_function
def _moments(shift, centred, squares, count, eps):
    """``(mean, var, std)`` from the sums ``centred = sum(x - shift)`` and
    ``squares = sum((x - shift)**2)`` over ``count`` values, float64 scalars or arrays."""
    mean = shift + centred / count
    var = (squares - centred * centred / count) / count
    return mean, var, np.sqrt(var + eps)


@inner_function
def _gradient_terms(sum_d, centred, inv_scale, gamma, std, count):
    """``(dgamma, mean(dout), slope, coef)`` from ``sum_d = sum(dout)`` and
    ``centred = sum(dout * (v - shift))`` with ``xn = (v - shift) * inv_scale``, so that
    ``dx = coef * (dout - mean(dout) - (v - shift) * slope)``; float64 scalars or arrays.

    The scale is applied once per feature (1 for ``v = xn``: the same bits as summing
    ``dout * xn``).
    """
    dgamma = centred * inv_scale
    return dgamma, sum_d / count, (dgamma / count) * inv_scale, gamma / std


# ------------------------------------------------------------------ sums
# The sums take one of three forms, chosen by which arguments are None (Numba compiles each
# form on its own, without the other forms' work):
#   shift None:   s0 = sum(a)                                      the first pass
#   b None:       s0 = sum(a - shift), s1 = sum((a - shift)**2)    the second pass
#   neither:      s0 = sum(a),         s1 = sum(a * (b - shift))   the backward
@inner_function
def _add_terms(a, b, k, shift, s0, s1, lane):
    """Add the terms of value ``k`` of ``a`` (and ``b``) to ``s0[lane]``/``s1[lane]``;
    ``shift`` is a float64 or None."""
    u = np.float64(a[k])
    if shift is None:
        s0[lane] += u
    elif b is None:
        u -= shift
        s0[lane] += u
        s1[lane] += u * u
    else:
        s0[lane] += u
        s1[lane] += u * (np.float64(b[k]) - shift)


# ------------------------------------------------------------------ block helpers (N, D)
# The (N, D) arrays arrive flattened, with ``d`` their row length; a block is the features
# ``j0:j0 + width`` of the rows ``i0:i1``. Per-feature arrays are indexed by feature (length
# d); indices are cast to uint64 (never negative) so Numba drops its wraparound check and
# LLVM vectorises over features.
@inner_function
def _column_sums_2d(a, b, d, j0, width, n, n_runs, r0, r1, shift):
    """The terms (see :func:`_add_terms`) of the features ``j0:j0 + width`` summed over the
    runs ``r0:r1`` of ``n_runs`` equal runs of the ``n`` rows, as two float64 ``(width,)``
    arrays: each run's rows in order from zero, then the runs in order; ``shift`` is None
    or float64 ``(d,)``."""
    t0 = np.zeros(width)
    t1 = np.zeros(width)
    for r in range(r0, r1):
        i0, i1 = _run_bounds(r, n, n_runs)
        s0 = np.zeros(width)
        s1 = np.zeros(width)
        for i in range(i0, i1):
            row = i * d + j0
            for j in range(width):
                k = np.uint64(row + j)
                if shift is None:  # resolved when compiling
                    _add_terms(a, b, k, None, s0, s1, np.uint64(j))
                else:
                    _add_terms(a, b, k, shift[np.uint64(j0 + j)], s0, s1, np.uint64(j))
        for j in range(width):
            t0[j] += s0[j]
            t1[j] += s1[j]
    return t0, t1


@inner_function
def _normalize_rows(x, d, j0, width, i0, i1, shift, inv_scale, gamma, beta, xn, out, write_xn):
    """xn = (x - shift) * inv_scale and out = gamma * xn + beta over the block; ``xn`` is
    written only with ``write_xn``."""
    for i in range(i0, i1):
        row = i * d + j0
        for j in range(width):
            k = np.uint64(row + j)
            f = np.uint64(j0 + j)
            t = (np.float64(x[k]) - shift[f]) * inv_scale[f]
            if write_xn:
                xn[k] = t
            out[k] = gamma[f] * t + beta[f]


@inner_function
def _backward_rows(dout, v, d, j0, width, i0, i1, shift, coef, mean_d, slope, dx):
    """dx = coef * (dout - mean_d - (v - shift) * slope) over the block (see
    :func:`_gradient_terms`)."""
    for i in range(i0, i1):
        row = i * d + j0
        for j in range(width):
            k = np.uint64(row + j)
            f = np.uint64(j0 + j)
            t = np.float64(v[k]) - shift[f]
            dx[k] = coef[f] * (np.float64(dout[k]) - mean_d[f] - t * slope[f])


# ------------------------------------------------------------------ block helpers (N, C, L)
@inner_function
def _channel_sums_3d(a, b, c, n_runs, r0, r1, shift):
    """The terms (see :func:`_add_terms`) of channel ``c`` of ``(N, C, L)`` arrays summed
    over the runs ``r0:r1`` of ``n_runs`` equal runs of the images, as two float64s;
    ``shift`` is a float64 or None. In a run, value ``k`` of each image goes to lane
    ``k % _LANES`` and the lanes are added in order at the end; then the runs in order."""
    length = a.shape[2]
    full = length - length % _LANES
    t0 = 0.0
    t1 = 0.0
    for r in range(r0, r1):
        i0, i1 = _run_bounds(r, a.shape[0], n_runs)
        s0 = np.zeros(_LANES)
        s1 = np.zeros(_LANES)
        for i in range(i0, i1):
            for k0 in range(0, full, _LANES):
                for k in range(_LANES):
                    _add_terms(a, b, (i, c, k0 + k), shift, s0, s1, k)
            for k in range(full, length):
                _add_terms(a, b, (i, c, k), shift, s0, s1, k - full)
        u0 = 0.0
        u1 = 0.0
        for k in range(_LANES):
            u0 += s0[k]
            u1 += s1[k]
        t0 += u0
        t1 += u1
    return t0, t1


@inner_function
def _normalize_plane(x, shift, inv_scale, gamma, beta, xn, out, write_xn):
    """xn = (x - shift) * inv_scale and out = gamma * xn + beta along one ``(L,)`` run of a
    channel (float64 scalars); ``xn`` is written only with ``write_xn``."""
    for k in range(x.shape[0]):
        t = (np.float64(x[k]) - shift) * inv_scale
        if write_xn:
            xn[k] = t
        out[k] = gamma * t + beta


@inner_function
def _backward_plane(dout, v, shift, coef, mean_d, slope, dx):
    """dx = coef * (dout - mean_d - (v - shift) * slope) along one ``(L,)`` run of a
    channel (float64 scalars)."""
    for k in range(dout.shape[0]):
        t = np.float64(v[k]) - shift
        dx[k] = coef * (np.float64(dout[k]) - mean_d - t * slope)


# ------------------------------------------------------------------ fused kernels
@threaded_kernel()
def _forward_2d_fused(
    x, gamma, beta, eps, feature_block, n_runs, xn, out, mean, var, std, write_xn, first, last
):
    """Training forward of a C-contiguous ``(N, D)`` array in one launch: a task owns a block
    of ``feature_block`` features and makes every pass over it (sums, shifted sums,
    normalise). Writes ``out`` (and ``xn`` with ``write_xn``) shaped like ``x``, and the
    float64 ``(D,)`` ``mean``, ``var`` and ``std``."""
    n, d = x.shape
    xf = x.reshape(-1)
    xnf = xn.reshape(-1)
    of = out.reshape(-1)
    shift = np.empty(d)
    inv = np.empty(d)
    for block in range(first, last):
        j0, width = _feature_range(np.int64(block), feature_block, d)
        s, _ = _column_sums_2d(xf, None, d, j0, width, n, n_runs, np.int64(0), n_runs, None)
        for j in range(width):
            shift[j0 + j] = s[j] / n
        r, q = _column_sums_2d(xf, None, d, j0, width, n, n_runs, np.int64(0), n_runs, shift)
        for j in range(width):
            f = j0 + j
            m, v, sd = _moments(shift[f], r[j], q[j], n, eps)
            mean[f] = m
            var[f] = v
            std[f] = sd
            inv[f] = 1.0 / sd  # one division per feature, a multiply per element
        _normalize_rows(xf, d, j0, width, np.int64(0), n, mean, inv, gamma, beta, xnf, of, write_xn)


@threaded_kernel()
def _backward_2d_fused(
    dout, v, shift, inv_scale, gamma, std, feature_block, n_runs, dx, dgamma, dbeta, first, last
):
    """Backward of a C-contiguous ``(N, D)`` array in one launch, one block of features per
    task (see :func:`_forward_2d_fused`); xn = (v - shift) * inv_scale with float64 ``(D,)``
    ``shift``, ``inv_scale`` and ``std``. Writes ``dx`` and the float64 ``(D,)`` ``dgamma``
    and ``dbeta``."""
    n, d = dout.shape
    df = dout.reshape(-1)
    vf = v.reshape(-1)
    dxf = dx.reshape(-1)
    mean_d = np.empty(d)
    slope = np.empty(d)
    coef = np.empty(d)
    for block in range(first, last):
        j0, width = _feature_range(np.int64(block), feature_block, d)
        s0, s1 = _column_sums_2d(df, vf, d, j0, width, n, n_runs, np.int64(0), n_runs, shift)
        for j in range(width):
            f = j0 + j
            dg, md, sl, cf = _gradient_terms(
                s0[j], s1[j], inv_scale[f], np.float64(gamma[f]), std[f], n
            )
            dbeta[f] = s0[j]
            dgamma[f] = dg
            mean_d[f] = md
            slope[f] = sl
            coef[f] = cf
        _backward_rows(df, vf, d, j0, width, np.int64(0), n, shift, coef, mean_d, slope, dxf)


@threaded_kernel()
def _forward_3d_fused(x, gamma, beta, eps, n_runs, xn, out, mean, var, std, write_xn, first, last):
    """Training forward of a C-contiguous ``(N, C, L)`` array per channel in one launch: a
    task owns one channel and makes every pass over its N runs of L values. Writes ``out``
    (and ``xn`` with ``write_xn``) and the float64 ``(C,)`` ``mean``, ``var``, ``std``."""
    n, channels, length = x.shape
    count = n * length
    for channel in range(first, last):
        c = np.int64(channel)
        s, _ = _channel_sums_3d(x, None, c, n_runs, np.int64(0), n_runs, None)
        shift = s / count
        r, q = _channel_sums_3d(x, None, c, n_runs, np.int64(0), n_runs, shift)
        m, v, sd = _moments(shift, r, q, count, eps)
        inv = 1.0 / sd
        g = np.float64(gamma[c])
        b = np.float64(beta[c])
        for i in range(n):
            _normalize_plane(x[i, c], m, inv, g, b, xn[i, c], out[i, c], write_xn)
        mean[c] = m
        var[c] = v
        std[c] = sd


@threaded_kernel()
def _backward_3d_fused(
    dout, v, shift, inv_scale, gamma, std, n_runs, dx, dgamma, dbeta, first, last
):
    """Backward of a C-contiguous ``(N, C, L)`` array per channel in one launch, one channel
    per task; arguments as in :func:`_backward_2d_fused`."""
    n, channels, length = dout.shape
    count = n * length
    for channel in range(first, last):
        c = np.int64(channel)
        sum_d, centred = _channel_sums_3d(dout, v, c, n_runs, np.int64(0), n_runs, shift[c])
        dg, md, sl, cf = _gradient_terms(
            sum_d, centred, inv_scale[c], np.float64(gamma[c]), std[c], count
        )
        for i in range(n):
            _backward_plane(dout[i, c], v[i, c], shift[c], cf, md, sl, dx[i, c])
        dbeta[c] = sum_d
        dgamma[c] = dg


# ------------------------------------------------------------------ split kernels
@threaded_kernel()
def _sums_2d(a, b, n, d, shift, form, n_runs, feature_block, partial, first, last):
    """partial[r, 0] / partial[r, 1] (float64 ``(n_runs, 2, d)``) = the
    :func:`_column_sums_2d` of run ``r`` of the flattened C-contiguous ``(n, d)`` ``a`` and
    ``b``, with float64 ``(d,)`` ``shift``, in the form ``form`` (see :func:`_split_sums`);
    one task per (run, block of ``feature_block`` features)."""
    n_feat_blocks = (d + feature_block - 1) // feature_block
    for task in range(first, last):
        t = np.int64(task)
        r = t // n_feat_blocks
        j0, width = _feature_range(t - r * n_feat_blocks, feature_block, d)
        if form == _PLAIN:
            s0, s1 = _column_sums_2d(a, None, d, j0, width, n, n_runs, r, r + 1, None)
        elif form == _SHIFTED:
            s0, s1 = _column_sums_2d(a, None, d, j0, width, n, n_runs, r, r + 1, shift)
        else:
            s0, s1 = _column_sums_2d(a, b, d, j0, width, n, n_runs, r, r + 1, shift)
        for j in range(width):
            partial[r, 0, j0 + j] = s0[j]
            partial[r, 1, j0 + j] = s1[j]


@threaded_kernel()
def _sums_3d(a, b, shift, form, n_runs, partial, first, last):
    """partial[r, 0, c] / partial[r, 1, c] (float64 ``(n_runs, 2, C)``) = the
    :func:`_channel_sums_3d` of run ``r`` of channel ``c`` of C-contiguous ``(N, C, L)``
    ``a`` and ``b``, with float64 ``(C,)`` ``shift``, in the form ``form`` (see
    :func:`_split_sums`); one task per (run, channel)."""
    channels = a.shape[1]
    for task in range(first, last):
        t = np.int64(task)
        r = t // channels
        c = t - r * channels
        if form == _PLAIN:
            s0, s1 = _channel_sums_3d(a, None, c, n_runs, r, r + 1, None)
        elif form == _SHIFTED:
            s0, s1 = _channel_sums_3d(a, None, c, n_runs, r, r + 1, shift[c])
        else:
            s0, s1 = _channel_sums_3d(a, b, c, n_runs, r, r + 1, shift[c])
        partial[r, 0, c] = s0
        partial[r, 1, c] = s1


@threaded_kernel()
def _normalize_2d(x, shift, inv_scale, gamma, beta, xn, out, write_xn, first, last):
    """xn = (x - shift) * inv_scale; out = gamma * xn + beta, per feature of a C-contiguous
    ``(N, D)`` array (float64 ``(D,)`` ``shift``, ``inv_scale``), a run of rows per task."""
    n, d = x.shape
    xf = x.reshape(-1)
    xnf = xn.reshape(-1)
    of = out.reshape(-1)
    n_tasks = _row_tasks(n, d)
    for task in range(first, last):
        i0, i1 = _run_bounds(np.int64(task), n, n_tasks)
        _normalize_rows(
            xf, d, np.int64(0), d, i0, i1, shift, inv_scale, gamma, beta, xnf, of, write_xn
        )


@threaded_kernel()
def _normalize_3d(x, shift, inv_scale, gamma, beta, xn, out, write_xn, first, last):
    """As :func:`_normalize_2d` per channel of a C-contiguous ``(N, C, L)`` array, one
    ``(L,)`` run per task."""
    n, channels, _ = x.shape
    for plane in range(first, last):
        p = np.int64(plane)
        i = p // channels
        c = p - i * channels
        _normalize_plane(
            x[i, c],
            shift[c],
            inv_scale[c],
            np.float64(gamma[c]),
            np.float64(beta[c]),
            xn[i, c],
            out[i, c],
            write_xn,
        )


@threaded_kernel()
def _backward_2d(dout, v, shift, coef, mean_d, slope, dx, first, last):
    """dx = coef * (dout - mean_d - (v - shift) * slope) per feature of C-contiguous
    ``(N, D)`` arrays (float64 ``(D,)`` terms of :func:`_gradient_terms`), a run of rows
    per task."""
    n, d = dout.shape
    df = dout.reshape(-1)
    vf = v.reshape(-1)
    dxf = dx.reshape(-1)
    n_tasks = _row_tasks(n, d)
    for task in range(first, last):
        i0, i1 = _run_bounds(np.int64(task), n, n_tasks)
        _backward_rows(df, vf, d, np.int64(0), d, i0, i1, shift, coef, mean_d, slope, dxf)


@threaded_kernel()
def _backward_3d(dout, v, shift, coef, mean_d, slope, dx, first, last):
    """As :func:`_backward_2d` per channel of C-contiguous ``(N, C, L)`` arrays, one
    ``(L,)`` run per task."""
    n, channels, _ = dout.shape
    for plane in range(first, last):
        p = np.int64(plane)
        i = p // channels
        c = p - i * channels
        _backward_plane(dout[i, c], v[i, c], shift[c], coef[c], mean_d[c], slope[c], dx[i, c])


def _normalize(xv, shift, inv_scale, gamma, beta, xn, out, write_xn):
    """:func:`_normalize_2d` or :func:`_normalize_3d` over the kernel view ``xv``."""
    if xv.ndim == 2:
        tasks, kernel = _python(_row_tasks)(*xv.shape), _normalize_2d
    else:
        tasks, kernel = xv.shape[0] * xv.shape[1], _normalize_3d
    run_shares(kernel, tasks, xv.size, xv, shift, inv_scale, gamma, beta, xn, out, write_xn)


def _python(function):
    """The Python code of an inner kernel function, to run on NumPy arrays (the function
    itself under ``NUMBA_DISABLE_JIT``, where it is not compiled)."""
    return getattr(function, "py_func", function)


def _split_sums(a, b, shift):
    """The split path's :func:`_column_sums_2d` / :func:`_channel_sums_3d` for every
    feature/channel of C-contiguous ``(N, D)`` or ``(N, C, L)`` ``a`` and ``b`` (or None),
    ``shift`` float64 ``(D,)``/``(C,)`` or None: the runs' sums as tasks, added in run
    order. Returns two float64 ``(D,)``/``(C,)`` arrays. The split path is taken only from
    ``parallel_threshold`` elements up, so its kernels are always launched multi-threaded."""
    form = _PLAIN if shift is None else _SHIFTED if b is None else _PAIRED
    # one compiled kernel serves the three forms: unused arguments get stand-ins
    b = a if b is None else b
    shift = np.zeros(a.shape[1]) if shift is None else shift
    n_runs = _runs(a)
    partial = np.zeros((n_runs, 2, a.shape[1]))
    if a.size and a.ndim == 2:
        flat = (a.reshape(-1), b.reshape(-1), *a.shape, shift, form, n_runs, _feature_block(a))
        run_shares(_sums_2d, n_runs * _feature_blocks(a), a.size, *flat, partial)
    elif a.size:
        run_shares(_sums_3d, n_runs * a.shape[1], a.size, a, b, shift, form, n_runs, partial)
    totals = np.zeros((2, a.shape[1]))
    for r in range(n_runs):
        totals += partial[r]
    return totals[0], totals[1]


# ------------------------------------------------------------------ validation
def _check_eps(eps):
    if type(eps) is float and 0.0 < eps < math.inf:  # the common case, checked cheaply
        return eps
    if isinstance(eps, (bool, np.bool_)) or not isinstance(
        eps, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"eps must be a positive finite float, got {type(eps).__name__} {eps!r}")
    value = float(eps)
    if not (np.isfinite(value) and value > 0.0):
        raise ValueError(f"eps must be a positive finite float, got {eps!r}")
    return value


def _as_input(x, name, dtype):
    arr = as_float_array(x, name, dtype=dtype, ndim=(2, 4))
    return arr


def _as_param(value, name, size, dtype):
    """A ``(size,)`` array of ``dtype`` from a ``(size,)`` array or a scalar (broadcast)."""
    if (
        isinstance(value, np.ndarray)
        and value.shape == (size,)
        and value.dtype == dtype
        and value.flags.c_contiguous
    ):
        return value
    scalar = np.ndim(value) == 0
    arr = as_float_array(value, name, dtype=dtype)
    if scalar:
        return np.full(size, arr.reshape(-1)[0], dtype=dtype)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) (or be a scalar), got {arr.shape}")
    return arr


def _features(x):
    """Channel/feature count and the 2-D or 3-D kernel view of a contiguous x."""
    if x.ndim == 2:
        return x.shape[1], x
    n, c, h, w = x.shape
    return c, x.reshape(n, c, h * w)


def _fused(xv):
    """Whether the kernel view ``xv`` takes the fused kernels: enough feature blocks
    (``(N, D)``) or channels (``(N, C, L)``) to share out over threads, or fewer elements
    than ``parallel_threshold``. Few features or channels over many rows or images take the
    split kernels, whose tasks divide the rows/images too (the same bits either way)."""
    if xv.size == 0:
        return False
    if xv.shape[1] >= (2 * _feature_block(xv) if xv.ndim == 2 else 8):
        return True
    return xv.size < config.get("parallel_threshold")


def _feature_block(x):
    """Features per task of the (N, D) kernels for ``x``'s dtype."""
    return _FEATURE_BLOCK_BYTES // x.dtype.itemsize


def _reduced_count(x):
    return x.shape[0] if x.ndim == 2 else x.shape[0] * x.shape[2] * x.shape[3]


def _check_ndim_early(x, name):
    ndim = np.ndim(x)
    if ndim not in (2, 4):
        raise ValueError(
            f"{name} must be 2-D (N, D) or 4-D (N, C, H, W), got {ndim}-D with shape {np.shape(x)}"
        )


# ------------------------------------------------------------------ public API
_FLOAT64 = np.dtype(np.float64)


def _as_stats_dtype(stats_dtype, dtype):
    if stats_dtype is None:
        return dtype
    if stats_dtype is np.float64:  # the layer's call, checked cheaply
        return _FLOAT64
    try:
        chosen = np.dtype(stats_dtype)
    except TypeError:
        chosen = None
    if chosen is None or chosen not in (dtype, _FLOAT64):  # (a dtype == None is True)
        allowed = (
            "None or float64"
            if dtype == _FLOAT64
            else f"None, {dtype.name} (the result dtype) or float64"
        )
        raise ValueError(f"stats_dtype must be {allowed}, got {stats_dtype!r}")
    return chosen


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


@examples(_examples.batchnorm_forward, group="batchnorm")
def batchnorm_forward(
    x, gamma, beta, eps=1e-6, *, xn_out=None, out=None, return_xn=True, stats_dtype=None
):
    """Training-mode batch norm.

    ``x`` is ``(N, D)`` (statistics per feature, over axis 0) or ``(N, C, H, W)``
    (statistics per channel, over axes 0, 2, 3). ``gamma``/``beta`` have shape ``(D,)`` or
    ``(C,)`` (a scalar is broadcast). Returns ``(out, xn, mean, var, std)``: ``out`` and
    ``xn`` (the normalised input) shaped like ``x``; ``mean``, ``var`` (biased) and
    ``std = sqrt(var + eps)`` shaped ``(D,)``/``(C,)``. Dtype: the promotion of x, gamma,
    beta (float32 or float64); sums are accumulated in float64. ``N`` (and ``H*W``) must
    be at least 1. ``xn_out`` and ``out``, if given, receive ``xn`` and ``out`` (writeable
    C-contiguous arrays of ``x``'s shape and the result dtype, sharing no memory with the
    inputs or each other): reusing arrays spares the page faults of fresh ones.

    ``return_xn=False`` skips writing ``xn`` (returned as None; one array of memory traffic
    fewer): :func:`batchnorm_backward_from_input` recomputes it from ``x``. ``stats_dtype``
    is the dtype of ``mean``, ``var`` and ``std``: the result dtype (default) or float64,
    the statistics as accumulated (not rounded to float32), which that backward should be
    given.
    """
    _check_ndim_early(x, "x")
    eps = _check_eps(eps)
    dtype = compute_dtype(x, gamma, beta, names=("x", "gamma", "beta"))
    stats_dtype = _as_stats_dtype(stats_dtype, dtype)
    return_xn = _check_flag(return_xn, "return_xn")
    given = (x, gamma, beta)
    x = _as_input(x, "x", dtype)
    count = _reduced_count(x)
    if count == 0:
        raise ValueError(
            f"x must have at least one element per feature/channel, got shape {x.shape}"
        )
    size, xv = _features(x)
    gamma = _as_param(gamma, "gamma", size, dtype)
    beta = _as_param(beta, "beta", size, dtype)

    if return_xn:
        xn = checked_out(xn_out, x.shape, dtype, name="xn_out", inputs=given)
    elif xn_out is not None:
        raise ValueError("xn_out was given with return_xn=False: no xn is written")
    else:
        xn = None
    out = checked_out(out, x.shape, dtype, name="out", inputs=given + ((xn,) if return_xn else ()))
    # the kernels take an array either way; without xn, one nobody reads (never written)
    xn_arg = xn if return_xn else out
    mean64, var64, std64 = _forward(xv, gamma, beta, eps, xn_arg, out, return_xn)
    return (
        out,
        xn,
        mean64.astype(stats_dtype, copy=False),
        var64.astype(stats_dtype, copy=False),
        std64.astype(stats_dtype, copy=False),
    )


@examples(_examples.batchnorm_inference, group="batchnorm")
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-6):
    """Inference-mode batch norm with given statistics; returns ``out`` shaped like ``x``.

    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`` per feature
    (``(N, D)``) or per channel (``(N, C, H, W)``). Dtype: the promotion of x, gamma, beta;
    the running statistics (any real dtype, or scalars) do not widen it.
    """
    _check_ndim_early(x, "x")
    eps = _check_eps(eps)
    dtype = compute_dtype(x, gamma, beta, names=("x", "gamma", "beta"))
    x = _as_input(x, "x", dtype)
    size, xv = _features(x)
    gamma = _as_param(gamma, "gamma", size, dtype)
    beta = _as_param(beta, "beta", size, dtype)
    mean64 = _as_param(running_mean, "running_mean", size, np.float64)
    var64 = _as_param(running_var, "running_var", size, np.float64)
    inv_scale64 = 1.0 / np.sqrt(var64 + eps)
    out = np.empty_like(x)
    if x.size:
        outv = out.reshape(xv.shape)
        _normalize(xv, mean64, inv_scale64, gamma, beta, outv, outv, False)
    return out


@examples(_examples.batchnorm_backward, group="batchnorm")
def batchnorm_backward(dout, xn, std, gamma, *, out=None):
    """Gradients of training-mode batch norm.

    ``dout`` and ``xn`` shaped like the forward ``x``; ``std`` and ``gamma`` ``(D,)``/``(C,)``
    (``gamma`` may be a scalar). Returns ``(dx, dgamma, dbeta)``:
    ``dbeta = sum(dout)``, ``dgamma = sum(xn * dout)`` over the reduced axes and
    ``dx = gamma / std * (dout - mean(dout) - xn * mean(dout * xn))``. Dtype: the promotion
    of all four arguments. ``out``, if given, receives ``dx`` (a writeable C-contiguous array
    of ``dout``'s shape and the result dtype, sharing no memory with the inputs).
    """
    _check_ndim_early(dout, "dout")
    dtype = compute_dtype(dout, xn, std, gamma, names=("dout", "xn", "std", "gamma"))
    given = (dout, xn, std, gamma)
    dout = _as_input(dout, "dout", dtype)
    xn = as_float_array(xn, "xn", dtype=dtype)
    if xn.shape != dout.shape:
        raise ValueError(f"xn must have the shape of dout {dout.shape}, got {xn.shape}")
    size = _features(dout)[0]
    std = as_float_array(std, "std", dtype=dtype)
    if std.shape != (size,):
        raise ValueError(f"std must have shape ({size},), got {std.shape}")
    gamma = _as_param(gamma, "gamma", size, dtype)
    _check_count(dout)
    # the caller's arrays: a converted one is either the same array or a fresh copy
    dx = checked_out(out, dout.shape, dtype, name="out", inputs=given)
    return _backward(
        dout, xn, np.zeros(size), np.ones(size), std.astype(np.float64), gamma, dx, dtype
    )


@examples(_examples.batchnorm_backward_from_input, group="batchnorm")
def batchnorm_backward_from_input(dout, x, mean, std, gamma, *, out=None):
    """Gradients of training-mode batch norm from the forward's input rather than ``xn``.

    Like :func:`batchnorm_backward` with ``xn = (x - mean) / std`` recomputed on the fly in
    float64 (never rounded to float32), for a forward that ran with ``return_xn=False``.
    ``dout`` and ``x`` shaped like the forward ``x``; ``mean`` and ``std`` ``(D,)``/``(C,)``
    as that forward returned them (with ``stats_dtype=float64`` there, so that they are the
    statistics it normalised with); ``gamma`` ``(D,)``/``(C,)`` or a scalar.
    Returns ``(dx, dgamma, dbeta)``. Dtype: the promotion of dout, x and gamma; ``mean``
    and ``std`` (any real dtype) do not widen it. ``out`` as in :func:`batchnorm_backward`.
    """
    _check_ndim_early(dout, "dout")
    dtype = compute_dtype(dout, x, gamma, names=("dout", "x", "gamma"))
    given = (dout, x, mean, std, gamma)
    dout = _as_input(dout, "dout", dtype)
    x = as_float_array(x, "x", dtype=dtype)
    if x.shape != dout.shape:
        raise ValueError(f"x must have the shape of dout {dout.shape}, got {x.shape}")
    size = _features(dout)[0]
    mean64 = as_float_array(mean, "mean", dtype=np.float64)
    std64 = as_float_array(std, "std", dtype=np.float64)
    for name, value in (("mean", mean64), ("std", std64)):
        if value.shape != (size,):
            raise ValueError(f"{name} must have shape ({size},), got {value.shape}")
    gamma = _as_param(gamma, "gamma", size, dtype)
    _check_count(dout)
    dx = checked_out(out, dout.shape, dtype, name="out", inputs=given)
    # a zero std (no forward returns one) gives inf/nan, with NumPy's division warning
    return _backward(dout, x, mean64, 1.0 / std64, std64, gamma, dx, dtype)


def _check_count(dout):
    if _reduced_count(dout) == 0:
        raise ValueError(
            f"dout must have at least one element per feature/channel, got shape {dout.shape}"
        )


def _forward(xv, gamma, beta, eps, xn, out, write_xn):
    """Training forward of the kernel view ``xv`` into ``xn``/``out`` (shaped like the input);
    returns the float64 ``(mean, var, std)``."""
    count = xv.shape[0] * (xv.shape[2] if xv.ndim == 3 else 1)
    size = xv.shape[1]
    if xn.ndim != xv.ndim:
        xn, out = xn.reshape(xv.shape), out.reshape(xv.shape)
    if _fused(xv):
        mean, var, std = np.empty(size), np.empty(size), np.empty(size)
        if xv.ndim == 2:
            kernel, tasks, layout = _forward_2d_fused, _feature_blocks(xv), (_feature_block(xv),)
        else:
            kernel, tasks, layout = _forward_3d_fused, xv.shape[1], ()
        args = (xv, gamma, beta, eps, *layout, _runs(xv), xn, out, mean, var, std, write_xn)
        run_shares(kernel, tasks, xv.size, *args)
        return mean, var, std
    shift = _split_sums(xv, None, None)[0] / count
    centred, squares = _split_sums(xv, None, shift)
    # the kernels' formula on NumPy arrays: elementwise IEEE operations, the same bits
    mean, var, std = _python(_moments)(shift, centred, squares, count, eps)
    if xv.size:
        _normalize(xv, mean, 1.0 / std, gamma, beta, xn, out, write_xn)
    return mean, var, std


def _backward(dout, v, shift, inv_scale, std64, gamma, dx, dtype):
    """The backward kernels on validated arrays, xn = (v - shift) * inv_scale; every
    statistic float64 (one compiled signature per dtype whichever public function calls)."""
    count = _reduced_count(dout)
    size, dv = _features(dout)
    vv, dxv = (v, dx) if dout.ndim == 2 else (v.reshape(dv.shape), dx.reshape(dv.shape))
    if _fused(dv):
        dgamma64, dbeta64 = np.empty(size), np.empty(size)
        if dv.ndim == 2:
            kernel, tasks, layout = _backward_2d_fused, _feature_blocks(dv), (_feature_block(dv),)
        else:
            kernel, tasks, layout = _backward_3d_fused, dv.shape[1], ()
        args = (dv, vv, shift, inv_scale, gamma, std64, *layout, _runs(dv), dxv, dgamma64, dbeta64)
        run_shares(kernel, tasks, dv.size, *args)
        return dx, dgamma64.astype(dtype), dbeta64.astype(dtype)
    dbeta64, centred = _split_sums(dv, vv, shift)
    # the kernels' formulas on NumPy arrays: elementwise IEEE operations, the same bits
    dgamma64, mean_d, slope, coef = _python(_gradient_terms)(
        dbeta64, centred, inv_scale, gamma.astype(np.float64), std64, count
    )
    if dv.size:
        if dv.ndim == 2:
            tasks = _python(_row_tasks)(*dv.shape)
            run_shares(_backward_2d, tasks, dv.size, dv, vv, shift, coef, mean_d, slope, dxv)
        else:
            tasks = dv.shape[0] * dv.shape[1]
            run_shares(_backward_3d, tasks, dv.size, dv, vv, shift, coef, mean_d, slope, dxv)
    return dx, dgamma64.astype(dtype), dbeta64.astype(dtype)
