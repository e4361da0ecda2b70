"""Hypothesis strategies and array helpers shared by the test modules.

Arrays are drawn as a seed plus a value style and generated with NumPy, which keeps
shrinking cheap and the values well scaled; the ``ties`` style draws small integers so
pooling windows hold repeated maxima.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

DTYPES = (np.float32, np.float64)
LAYOUTS = ("C", "F", "stepped", "transposed", "reversed")

# float32 results vs a float64 oracle: relative to the magnitude of the values involved
TOL = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tolerance(dtype):
    return TOL[np.dtype(dtype)]


def assert_close(actual, expected, dtype=None, scale=None, err_msg=""):
    """``actual`` equals ``expected`` within the tolerance of ``dtype`` (default: actual's).

    ``atol`` is taken relative to ``scale`` (default: the largest magnitude in
    ``expected``, at least 1), so sums of many float32 terms compare fairly.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    tol = tolerance(dtype if dtype is not None else actual.dtype)
    if scale is None:
        finite = expected[np.isfinite(expected)]
        scale = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
    np.testing.assert_allclose(
        actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=err_msg
    )


def in_layout(a, layout):
    """An array equal to ``a`` (same dtype, shape and values) in the given memory layout.

    ``C``: contiguous copy; ``F``: Fortran order; ``stepped``: a view with step 2 on every
    axis of a larger buffer; ``transposed``: a transposed view of a contiguous buffer laid
    out with the axes rolled; ``reversed``: negative strides on every axis.
    """
    a = np.asarray(a)
    if layout == "C":
        out = np.array(a, order="C", copy=True)
    elif layout == "F":
        out = np.asfortranarray(a)
    elif layout == "stepped":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), dtype=a.dtype)
        if a.dtype.kind == "f":
            big[...] = np.nan  # cells outside the view must never be read
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        out = view
    elif layout == "transposed":
        if a.ndim < 2:
            return np.array(a, copy=True)
        perm = tuple(range(1, a.ndim)) + (0,)
        stored = np.ascontiguousarray(np.transpose(a, perm))
        inverse = tuple(np.argsort(perm))
        out = np.transpose(stored, inverse)
    elif layout == "reversed":
        stored = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        out = stored[tuple(slice(None, None, -1) for _ in a.shape)]
    else:  # pragma: no cover
        raise ValueError(layout)
    np.testing.assert_array_equal(out, a)
    assert out.dtype == a.dtype
    return out


dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)
seeds = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Window:
    """An ``(N, C, H, W)`` input and a ``fh x fw`` window with stride and pad."""

    n: int
    c: int
    h: int
    w: int
    fh: int
    fw: int
    stride: int
    pad: int

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def out_hw(self):
        return (
            (self.h + 2 * self.pad - self.fh) // self.stride + 1,
            (self.w + 2 * self.pad - self.fw) // self.stride + 1,
        )


@st.composite
def windows(
    draw, max_n=3, max_c=3, max_hw=9, max_k=5, max_stride=3, max_pad=2, pad_below_window=False
):
    """Geometry with batch 1..max_n, any (often non-square) image and window that fits.

    ``pad_below_window`` keeps ``pad < fh`` and ``pad < fw`` (what pooling requires).
    """
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    h = draw(st.integers(1, max_hw))
    w = draw(st.integers(1, max_hw))
    if pad_below_window:
        fh = draw(st.integers(1, min(max_k, h + 2 * max_pad)))
        fw = draw(st.integers(1, min(max_k, w + 2 * max_pad)))
        lo = max(0, -(-(fh - h) // 2), -(-(fw - w) // 2))
        hi = min(max_pad, fh - 1, fw - 1)
        assume(lo <= hi)
        pad = draw(st.integers(lo, hi))
    else:
        pad = draw(st.integers(0, max_pad))
        fh = draw(st.integers(1, min(max_k, h + 2 * pad)))
        fw = draw(st.integers(1, min(max_k, w + 2 * pad)))
    stride = draw(st.integers(1, max_stride))
    g = Window(n, c, h, w, fh, fw, stride, pad)
    assert fh <= h + 2 * pad and fw <= w + 2 * pad
    return g


def make_values(seed, shape, dtype=np.float64, style="normal"):
    """Deterministic test values of ``shape`` and ``dtype``."""
    rng = np.random.default_rng(seed)
    if style == "normal":
        a = rng.standard_normal(shape)
    elif style == "ties":
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif style == "negative":
        a = -rng.uniform(0.5, 3.0, size=shape)
    else:  # pragma: no cover
        raise ValueError(style)
    return a.astype(dtype)


value_styles = st.sampled_from(("normal", "ties", "negative"))


def conv_arrays(seed, g, fn, dtype):
    """``x``, ``W``, ``b`` and ``dout`` of a convolution with window ``g`` and ``fn`` filters."""
    x = make_values(seed, g.x_shape, dtype)
    W = make_values(seed + 1, (fn, g.c, g.fh, g.fw), dtype)
    b = make_values(seed + 2, (fn,), dtype)
    dout = make_values(seed + 3, (g.n, fn, *g.out_hw), dtype)
    return x, W, b, dout


def bad_out_arrays(shape, dtype):
    """Destinations an ``out=`` argument of ``shape`` and ``dtype`` must refuse (pytest params)."""
    other = np.float32 if dtype == np.float64 else np.float64
    readonly = np.empty(shape, dtype=dtype)
    readonly.flags.writeable = False
    bigger = tuple(s + 1 if i == len(shape) - 1 else s for i, s in enumerate(shape))
    return [
        pytest.param(np.empty(shape, dtype=other), id="wrong-dtype"),
        pytest.param(np.empty(bigger, dtype=dtype), id="wrong-shape"),
        pytest.param(np.empty(shape, dtype=dtype, order="F"), id="fortran"),
        pytest.param(np.empty(bigger, dtype=dtype)[..., :-1], id="non-contiguous"),
        pytest.param(readonly, id="read-only"),
        pytest.param(np.zeros(shape).tolist(), id="list"),
    ]
