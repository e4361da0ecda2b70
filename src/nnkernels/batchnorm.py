"""Batch normalisation reductions: per feature on ``(N, D)``, per channel on ``(N, C, H, W)``.

Statistics are two-pass (the mean, then the mean of squared deviations), accumulated in
float64 whatever the compute dtype. Reductions are race-free and deterministic: the work is
cut into a fixed grid of tasks that depends only on the input shape (never on the number
of threads or on scheduling); each task writes its own partial sums, which are then merged
serially in task order.

* ``(N, D)``: tasks are (block of features) x (block of rows); a task sums its rows in
  order with a contiguous inner loop over its features.
* ``(N, C, H, W)``: tasks are (channel) x (block of images), so a few channels over a large
  batch still split over threads; inside a task a fixed set of lanes accumulates the
  contiguous ``H*W`` run of each image.
"""

import math
import numbers

import numpy as np
from numba import prange

from . import _jit
from . import _examples
from ._jit import inner_function, parallel_kernel
from ._registry import examples
from ._validation import as_float_array, checked_out, compute_dtype

__all__ = ["batchnorm_forward", "batchnorm_inference", "batchnorm_backward",
           "batchnorm_backward_from_input"]

#: bytes of each row a task of the (N, D) kernels covers: the task reads N runs of this
#: length, and runs of 2 KiB let the hardware prefetcher keep up when the array comes from
#: DRAM (docs/performance.md, "Row runs of 2 KiB")
_FEATURE_BLOCK_BYTES = 2048
_MIN_TASK = 16384  # elements a task should reduce at least, when the shape allows
_TARGET_TASKS = 16  # split rows/images until about this many tasks exist
_LANES = 8  # independent partial sums per 4-D task (so the adds pipeline / vectorise)


# ------------------------------------------------------------------ task grid
def _row_blocks(rows, other_tasks, row_elems):
    """Number of row (or image) blocks: enough tasks for the threads, but not tiny ones."""
    if rows <= 1 or other_tasks == 0 or other_tasks >= _TARGET_TASKS:  # 0: no features
        return 1
    by_target = -(-_TARGET_TASKS // other_tasks)
    by_size = max(1, (rows * row_elems) // _MIN_TASK)
    return int(max(1, min(rows, by_target, by_size)))


# ------------------------------------------------------------------ kernels (N, D)
@parallel_kernel
def _sums_2d(a, b, center, n_row_blocks, feature_block, partial):
    """partial[r, 0, j] = sum over block r's rows of a[:, j], or of (a[:, j] - center[j])**2
    when ``center`` is non-empty; with ``b`` non-empty also partial[r, 1, j] = sum of
    a * (b - center) (``center`` then always given: zeros for b as is).

    Rows are split into ``n_row_blocks`` equal runs. Indices are cast to uint64 (never
    negative) so Numba drops its wraparound and LLVM vectorises over features.
    """
    n, d = a.shape
    n_feat_blocks = (d + feature_block - 1) // feature_block
    paired = b.shape[0] > 0
    centered = center.shape[0] > 0
    af = a.reshape(-1)
    bf = b.reshape(-1)
    for task in prange(n_row_blocks * n_feat_blocks):
        t = np.int64(task)
        r = t // n_feat_blocks
        fb = t - r * n_feat_blocks
        j0 = fb * feature_block
        width = min(d, j0 + feature_block) - j0
        i0 = (r * n) // n_row_blocks
        i1 = ((r + 1) * n) // n_row_blocks
        s0 = np.zeros(width)
        s1 = np.zeros(width)
        mu = np.zeros(width)
        if centered:
            for j in range(width):
                mu[np.uint64(j)] = center[np.uint64(j0 + j)]
        if paired:
            for i in range(i0, i1):
                row = i * d + j0
                for j in range(width):
                    u = np.float64(af[np.uint64(row + j)])
                    t = np.float64(bf[np.uint64(row + j)]) - mu[np.uint64(j)]
                    s0[np.uint64(j)] += u
                    s1[np.uint64(j)] += u * t
        elif centered:
            for i in range(i0, i1):
                row = i * d + j0
                for j in range(width):
                    u = np.float64(af[np.uint64(row + j)]) - mu[np.uint64(j)]
                    s0[np.uint64(j)] += u * u
        else:
            for i in range(i0, i1):
                row = i * d + j0
                for j in range(width):
                    s0[np.uint64(j)] += np.float64(af[np.uint64(row + j)])
        for j in range(width):
            partial[r, 0, j0 + j] = s0[np.uint64(j)]
            partial[r, 1, j0 + j] = s1[np.uint64(j)]


@parallel_kernel
def _normalize_2d(x, shift, inv_scale, gamma, beta, xn, out, write_xn):
    """xn = (x - shift) * inv_scale; out = gamma * xn + beta, per feature (last axis)."""
    n, d = x.shape
    xf = x.reshape(-1)
    xnf = xn.reshape(-1)
    of = out.reshape(-1)
    for i in prange(n):
        row = np.int64(i) * d
        if write_xn:
            for j in range(d):
                k = np.uint64(row + j)
                v = (np.float64(xf[k]) - shift[np.uint64(j)]) * inv_scale[np.uint64(j)]
                xnf[k] = v
                of[k] = gamma[np.uint64(j)] * v + beta[np.uint64(j)]
        else:
            for j in range(d):
                k = np.uint64(row + j)
                v = (np.float64(xf[k]) - shift[np.uint64(j)]) * inv_scale[np.uint64(j)]
                of[k] = gamma[np.uint64(j)] * v + beta[np.uint64(j)]


@parallel_kernel
def _backward_2d(dout, v, shift, coef, mean_d, slope, dx):
    """dx = coef * (dout - mean_d - (v - shift) * slope), per feature (last axis): with
    xn = (v - shift) * scale, slope is mean(dout * xn) * scale. ``v`` is xn itself (shift 0,
    scale 1) or the forward's input."""
    n, d = dout.shape
    df = dout.reshape(-1)
    vf = v.reshape(-1)
    dxf = dx.reshape(-1)
    for i in prange(n):
        row = np.int64(i) * d
        for j in range(d):
            k = np.uint64(row + j)
            u = np.uint64(j)
            t = np.float64(vf[k]) - shift[u]
            dxf[k] = coef[u] * (np.float64(df[k]) - mean_d[u] - t * slope[u])


@parallel_kernel
def _forward_2d_fused(x, gamma, beta, eps, feature_block, xn, out, mean, var, std, write_xn):
    """Training forward of (N, D) in one launch: each task owns a block of features and
    makes three passes over its column block (sum, centred sum of squares, normalise),
    which stays in cache. Sums in float64, rows in order: deterministic. ``xn`` is
    written only with ``write_xn``."""
    n, d = x.shape
    n_blocks = (d + feature_block - 1) // feature_block
    xf = x.reshape(-1)
    xnf = xn.reshape(-1)
    of = out.reshape(-1)
    for block in prange(n_blocks):
        j0 = np.int64(block) * feature_block
        width = min(d, j0 + feature_block) - j0
        s = np.zeros(width)
        for i in range(n):
            row = i * d + j0
            for j in range(width):
                s[np.uint64(j)] += np.float64(xf[np.uint64(row + j)])
        mu0 = s / n
        q = np.zeros(width)
        c = np.zeros(width)
        for i in range(n):
            row = i * d + j0
            for j in range(width):
                u = np.float64(xf[np.uint64(row + j)]) - mu0[np.uint64(j)]
                c[np.uint64(j)] += u
                q[np.uint64(j)] += u * u
        # corrected two-pass: the residual sum c removes the first pass's rounding error
        mu = mu0 + c / n
        v = (q - c * c / n) / n
        sd = np.sqrt(v + eps)
        inv = 1.0 / sd  # one division per feature, a multiply per element
        for i in range(n):
            row = i * d + j0
            for j in range(width):
                k = np.uint64(row + j)
                u = np.uint64(j)
                t = (np.float64(xf[k]) - mu[u]) * inv[u]
                if write_xn:
                    xnf[k] = t
                of[k] = gamma[np.uint64(j0 + j)] * t + beta[np.uint64(j0 + j)]
        for j in range(width):
            mean[j0 + j] = mu[j]
            var[j0 + j] = v[j]
            std[j0 + j] = sd[j]


@parallel_kernel
def _backward_2d_fused(dout, v, shift, inv_scale, gamma, std, feature_block, dx, dgamma, dbeta):
    """Backward of (N, D) in one launch, one block of features per task (see the forward);
    xn = (v - shift) * inv_scale (``v`` is xn itself, or the forward's input)."""
    n, d = dout.shape
    n_blocks = (d + feature_block - 1) // feature_block
    df = dout.reshape(-1)
    vf = v.reshape(-1)
    dxf = dx.reshape(-1)
    for block in prange(n_blocks):
        j0 = np.int64(block) * feature_block
        width = min(d, j0 + feature_block) - j0
        s0 = np.zeros(width)
        s1 = np.zeros(width)
        mu = np.empty(width)
        sc = np.empty(width)
        for j in range(width):
            mu[j] = shift[j0 + j]
            sc[j] = inv_scale[j0 + j]
        for i in range(n):
            row = i * d + j0
            for j in range(width):
                k = np.uint64(row + j)
                u = np.uint64(j)
                g = np.float64(df[k])
                s0[u] += g
                s1[u] += g * (np.float64(vf[k]) - mu[u])
        # scaled once per feature (scale 1 for xn: the same bits as summing dout * xn)
        md = np.empty(width)
        slope = np.empty(width)
        coef = np.empty(width)
        for j in range(width):
            s1[j] *= sc[j]
            md[j] = s0[j] / n
            slope[j] = (s1[j] / n) * sc[j]  # mean(dout * xn) per unit of v - shift
            coef[j] = np.float64(gamma[j0 + j]) / np.float64(std[j0 + j])
        for i in range(n):
            row = i * d + j0
            for j in range(width):
                k = np.uint64(row + j)
                u = np.uint64(j)
                t = np.float64(vf[k]) - mu[u]
                dxf[k] = coef[u] * (np.float64(df[k]) - md[u] - t * slope[u])
        for j in range(width):
            dbeta[j0 + j] = s0[j]
            dgamma[j0 + j] = s1[j]


# ------------------------------------------------------------------ kernels (N, C, L)
@inner_function
def _lane_sum(row, center, acc, sq):
    """acc[k % _LANES] += row[k] - center, and sq[...] += (row[k] - center)**2, in float64.

    Fixed lanes and order (deterministic); the unrolled lanes let LLVM vectorise.
    """
    length = row.shape[0]
    full = length - length % _LANES
    for k0 in range(0, full, _LANES):
        for k in range(_LANES):
            u = np.float64(row[k0 + k]) - center
            acc[k] += u
            sq[k] += u * u
    for k in range(full, length):
        u = np.float64(row[k]) - center
        acc[k - full] += u
        sq[k - full] += u * u


@inner_function
def _lane_dot(row, other, shift, acc, dot):
    """acc[k % _LANES] += row[k] and dot[...] += row[k] * (other[k] - shift), in float64."""
    length = row.shape[0]
    full = length - length % _LANES
    for k0 in range(0, full, _LANES):
        for k in range(_LANES):
            u = np.float64(row[k0 + k])
            acc[k] += u
            dot[k] += u * (np.float64(other[k0 + k]) - shift)
    for k in range(full, length):
        u = np.float64(row[k])
        acc[k - full] += u
        dot[k - full] += u * (np.float64(other[k]) - shift)


@parallel_kernel
def _forward_3d_fused(x, gamma, beta, eps, xn, out, mean, var, std, write_xn):
    """Training forward of (N, C, L) per channel in one launch: a task owns one channel and
    makes three passes over its N runs of L values (sum, centred squares, normalise),
    in a fixed order with fixed lanes: deterministic, float64 sums. ``xn`` is written only
    with ``write_xn``."""
    n, channels, length = x.shape
    count = n * length
    for channel in prange(channels):
        c = np.int64(channel)
        s = np.zeros(_LANES)
        unused = np.zeros(_LANES)
        for i in range(n):
            _lane_sum(x[i, c], 0.0, s, unused)
        mu0 = s.sum() / count
        r = np.zeros(_LANES)
        q = np.zeros(_LANES)
        for i in range(n):
            _lane_sum(x[i, c], mu0, r, q)
        res = r.sum()
        mu = mu0 + res / count  # corrected two-pass
        v = (q.sum() - res * res / count) / count
        sd = np.sqrt(v + eps)
        inv = 1.0 / sd
        g = np.float64(gamma[c])
        b = np.float64(beta[c])
        for i in range(n):
            src = x[i, c]
            dst_n = xn[i, c]
            dst_o = out[i, c]
            for k in range(length):
                t = (np.float64(src[k]) - mu) * inv
                if write_xn:
                    dst_n[k] = t
                dst_o[k] = g * t + b
        mean[c] = mu
        var[c] = v
        std[c] = sd


@parallel_kernel
def _backward_3d_fused(dout, v, shift, inv_scale, gamma, std, dx, dgamma, dbeta):
    """Backward of (N, C, L) per channel in one launch, one channel per task;
    xn = (v - shift) * inv_scale (``v`` is xn itself, or the forward's input)."""
    n, channels, length = dout.shape
    count = n * length
    for channel in prange(channels):
        c = np.int64(channel)
        mu = shift[c]
        sc = inv_scale[c]
        s0 = np.zeros(_LANES)
        s1 = np.zeros(_LANES)
        for i in range(n):
            _lane_dot(dout[i, c], v[i, c], mu, s0, s1)
        sum_d = s0.sum()
        sum_dxn = s1.sum() * sc  # scale 1 for xn: the same bits as summing dout * xn
        md = sum_d / count
        slope = (sum_dxn / count) * sc  # mean(dout * xn) per unit of v - shift
        coef = np.float64(gamma[c]) / np.float64(std[c])
        for i in range(n):
            g = dout[i, c]
            src = v[i, c]
            dst = dx[i, c]
            for k in range(length):
                t = np.float64(src[k]) - mu
                dst[k] = coef * (np.float64(g[k]) - md - t * slope)
        dbeta[c] = sum_d
        dgamma[c] = sum_dxn


@parallel_kernel
def _sums_3d(a, b, center, n_img_blocks, partial):
    """Per channel of ``a`` (N, C, L): like :func:`_sums_2d` with tasks (image block, channel).

    partial[r, 0, c] / partial[r, 1, c] hold block r's sums for channel c.
    """
    n, channels, length = a.shape
    paired = b.shape[0] > 0
    centered = center.shape[0] > 0
    for task in prange(n_img_blocks * channels):
        t = np.int64(task)
        r = t // channels
        c = t - r * channels
        i0 = (r * n) // n_img_blocks
        i1 = ((r + 1) * n) // n_img_blocks
        s0 = np.zeros(_LANES)
        s1 = np.zeros(_LANES)
        mu = center[c] if centered else 0.0
        full = length - length % _LANES
        for i in range(i0, i1):
            if paired:
                for k0 in range(0, full, _LANES):
                    for k in range(_LANES):
                        u = np.float64(a[i, c, k0 + k])
                        s0[k] += u
                        s1[k] += u * (np.float64(b[i, c, k0 + k]) - mu)
                for k in range(full, length):
                    u = np.float64(a[i, c, k])
                    s0[k - full] += u
                    s1[k - full] += u * (np.float64(b[i, c, k]) - mu)
            elif centered:
                for k0 in range(0, full, _LANES):
                    for k in range(_LANES):
                        u = np.float64(a[i, c, k0 + k]) - mu
                        s0[k] += u * u
                for k in range(full, length):
                    u = np.float64(a[i, c, k]) - mu
                    s0[k - full] += u * u
            else:
                for k0 in range(0, full, _LANES):
                    for k in range(_LANES):
                        s0[k] += np.float64(a[i, c, k0 + k])
                for k in range(full, length):
                    s0[k - full] += np.float64(a[i, c, k])
        total0 = 0.0
        total1 = 0.0
        for k in range(_LANES):
            total0 += s0[k]
            total1 += s1[k]
        partial[r, 0, c] = total0
        partial[r, 1, c] = total1


@parallel_kernel
def _normalize_3d(x, shift, inv_scale, gamma, beta, xn, out, write_xn):
    """xn = (x - shift) * inv_scale; out = gamma * xn + beta, per channel (axis 1)."""
    n, channels, length = x.shape
    for plane in prange(n * channels):
        p = np.int64(plane)
        i = p // channels
        c = p - i * channels
        mu = shift[c]
        inv = inv_scale[c]
        g = gamma[c]
        bt = beta[c]
        for k in range(length):
            v = (np.float64(x[i, c, k]) - mu) * inv
            if write_xn:
                xn[i, c, k] = v
            out[i, c, k] = g * v + bt


@parallel_kernel
def _backward_3d(dout, v, shift, coef, mean_d, slope, dx):
    """dx = coef * (dout - mean_d - (v - shift) * slope), per channel (axis 1); see
    :func:`_backward_2d`."""
    n, channels, length = dout.shape
    for plane in prange(n * channels):
        p = np.int64(plane)
        i = p // channels
        c = p - i * channels
        cf = coef[c]
        md = mean_d[c]
        sl = slope[c]
        mu = shift[c]
        for k in range(length):
            t = np.float64(v[i, c, k]) - mu
            dx[i, c, k] = cf * (np.float64(dout[i, c, k]) - md - t * sl)


# ------------------------------------------------------------------ reductions
_EMPTY = np.empty(0)


def _channel_sums(a, b=None, center=None):
    """Sums over every axis but the feature/channel one, in float64.

    ``a`` is a C-contiguous ``(N, D)`` or ``(N, C, L)`` array. Returns ``sum(a)``, or
    ``sum((a - center)**2)`` when only ``center`` is given, or
    ``(sum(a), sum(a * (b - center)))`` when ``b`` and ``center`` are given.
    Deterministic: fixed task grid, partials merged in task order.
    """
    b_arr = b if b is not None else a[:0]
    center_arr = center if center is not None else _EMPTY
    if a.ndim == 2:
        n, d = a.shape
        feature_block = _feature_block(a)
        n_feat_blocks = -(-d // feature_block)
        blocks = _row_blocks(n, n_feat_blocks, min(d, feature_block))
        partial = np.empty((blocks, 2, d))
        if a.size:
            _sums_2d.sized(a.size)(a, b_arr, center_arr, blocks, feature_block, partial)
        else:
            partial[...] = 0.0
    else:
        n, channels, length = a.shape
        blocks = _row_blocks(n, channels, length)
        partial = np.empty((blocks, 2, channels))
        if a.size:
            _sums_3d.sized(a.size)(a, b_arr, center_arr, blocks, partial)
        else:
            partial[...] = 0.0
    totals = partial[0].copy()
    for r in range(1, blocks):
        totals += partial[r]
    if b is not None:
        return totals[0], totals[1]
    return totals[0]


# ------------------------------------------------------------------ validation
def _check_eps(eps):
    if type(eps) is float and 0.0 < eps < math.inf:  # the common case, checked cheaply
        return eps
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (numbers.Real, np.floating, np.integer)):
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
    if (isinstance(value, np.ndarray) and value.shape == (size,) and value.dtype == dtype
            and value.flags.c_contiguous):
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


_SMALL = 1 << 15  # below this many elements the one-launch kernels are always used


def _fused_3d(x):
    """Whether to use the one-launch per-channel kernels: enough channels to share out over
    threads, or little work. Few channels over a large batch split the images instead.
    The choice depends on the shape only, so results never depend on the thread count."""
    return x.ndim == 4 and x.size > 0 and (x.shape[1] >= 8 or x.size < _SMALL)


def _fused_2d(x):
    """Whether to use the one-launch (N, D) kernels: enough feature blocks to share out, or
    little work. Few features over very many rows split the rows instead (shape only)."""
    return x.ndim == 2 and x.size > 0 and (x.shape[1] >= 2 * _feature_block(x) or x.size < _SMALL)


def _feature_block(x):
    """Features per task of the (N, D) kernels for ``x``'s dtype."""
    return _FEATURE_BLOCK_BYTES // x.dtype.itemsize


def _reduced_count(x):
    return x.shape[0] if x.ndim == 2 else x.shape[0] * x.shape[2] * x.shape[3]


def _check_ndim_early(x, name):
    ndim = np.ndim(x)
    if ndim not in (2, 4):
        raise ValueError(f"{name} must be 2-D (N, D) or 4-D (N, C, H, W), got {ndim}-D with shape {np.shape(x)}")


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
        allowed = "None or float64" if dtype == _FLOAT64 else f"None, {dtype.name} (the result dtype) or float64"
        raise ValueError(f"stats_dtype must be {allowed}, got {stats_dtype!r}")
    return chosen


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


@examples(_examples.batchnorm_forward, group="batchnorm")
def batchnorm_forward(x, gamma, beta, eps=1e-6, *, xn_out=None, out=None, return_xn=True,
                      stats_dtype=None):
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
        raise ValueError(f"x must have at least one element per feature/channel, got shape {x.shape}")
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
    if _fused_2d(x):
        mean64, var64, std64 = np.empty(size), np.empty(size), np.empty(size)
        _forward_2d_fused.sized(x.size)(x, gamma, beta, eps, _feature_block(x), xn_arg, out,
                                         mean64, var64, std64, return_xn)
    elif _fused_3d(x):
        mean64, var64, std64 = np.empty(size), np.empty(size), np.empty(size)
        _forward_3d_fused.sized(x.size)(xv, gamma, beta, eps, xn_arg.reshape(xv.shape),
                                         out.reshape(xv.shape), mean64, var64, std64, return_xn)
    else:
        mean64 = _channel_sums(xv) / count
        var64 = _channel_sums(xv, center=mean64) / count
        std64 = np.sqrt(var64 + eps)
        normalize = _normalize_2d if x.ndim == 2 else _normalize_3d
        if x.size:
            normalize.sized(x.size)(xv, mean64, 1.0 / std64, gamma, beta,
                                    xn_arg.reshape(xv.shape), out.reshape(xv.shape), return_xn)
    return (out, xn, mean64.astype(stats_dtype, copy=False), var64.astype(stats_dtype, copy=False),
            std64.astype(stats_dtype, copy=False))


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
    normalize = _normalize_2d if x.ndim == 2 else _normalize_3d
    if x.size:
        outv = out.reshape(xv.shape)
        normalize.sized(x.size)(xv, mean64, inv_scale64, gamma, beta, outv, outv, False)
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
    return _backward(dout, xn, np.zeros(size), np.ones(size), std.astype(np.float64), gamma, dx,
                     dtype)


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
        raise ValueError(f"dout must have at least one element per feature/channel, got shape {dout.shape}")


def _backward(dout, v, shift, inv_scale, std64, gamma, dx, dtype):
    """The backward kernels on validated arrays, xn = (v - shift) * inv_scale; every
    statistic float64 (one compiled signature per dtype whichever public function calls)."""
    count = _reduced_count(dout)
    size, dv = _features(dout)
    vv = v.reshape(dv.shape)
    if _fused_2d(dout):
        dgamma64, dbeta64 = np.empty(size), np.empty(size)
        _backward_2d_fused.sized(dout.size)(dout, v, shift, inv_scale, gamma, std64,
                                            _feature_block(dout), dx, dgamma64, dbeta64)
        return dx, dgamma64.astype(dtype), dbeta64.astype(dtype)
    if _fused_3d(dout):
        dgamma64, dbeta64 = np.empty(size), np.empty(size)
        _backward_3d_fused.sized(dout.size)(dv, vv, shift, inv_scale, gamma, std64,
                                            dx.reshape(dv.shape), dgamma64, dbeta64)
        return dx, dgamma64.astype(dtype), dbeta64.astype(dtype)

    dbeta64, centred = _channel_sums(dv, b=vv, center=shift)
    dgamma64 = centred * inv_scale  # scale 1 for xn: the same bits as summing dout * xn
    coef = gamma.astype(np.float64) / std64
    backward = _backward_2d if dout.ndim == 2 else _backward_3d
    if dout.size:
        backward.sized(dout.size)(dv, vv, shift, coef, dbeta64 / count,
                                  (dgamma64 / count) * inv_scale, dx.reshape(dv.shape))
    return dx, dgamma64.astype(dtype), dbeta64.astype(dtype)
