"""nnkernels.maxpool_forward / maxpool_backward against the slow loops of ``oracles`` and the
reference Pooling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracles
from nnkernels import maxpool_backward, maxpool_forward
from nnlayers.reference import Pooling

SETTINGS = settings(deadline=None, max_examples=30)


# ------------------------------------------------------------------ strategies
def noncontiguous(a, how):
    """``a``'s values in a non-C-contiguous array."""
    if how == "stepped":
        big = np.zeros(a.shape[:2] + (2 * a.shape[2], a.shape[3]), dtype=a.dtype)
        big[:, :, ::2] = a
        return big[:, :, ::2]
    if how == "transposed":
        return np.ascontiguousarray(a.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    return a


@st.composite
def pool_cases(draw, allow_pad=True):
    pool_h = draw(st.integers(1, 3))
    pool_w = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, min(pool_h, pool_w) - 1)) if allow_pad else 0
    height = draw(st.integers(max(1, pool_h - 2 * pad), 9))
    width = draw(st.integers(max(1, pool_w - 2 * pad), 9))
    n_img = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    style = draw(st.sampled_from(["normal", "ties", "nan"]))
    layout = draw(st.sampled_from(["C", "stepped", "transposed"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (n_img, channels, height, width)
    if style == "normal":
        x = rng.standard_normal(shape)
    else:
        x = rng.integers(-2, 2, shape).astype(np.float64)  # few values: many ties
        if style == "nan":
            x[rng.random(shape) < 0.15] = np.nan
    x = noncontiguous(x.astype(dtype), layout)
    return x, pool_h, pool_w, stride, pad


# ------------------------------------------------------------------ forward
@SETTINGS
@given(pool_cases())
def test_forward_matches_slow_loop(case):
    x, pool_h, pool_w, stride, pad = case
    x_before = x.copy()
    out, arg = maxpool_forward(x, pool_h, pool_w, stride, pad)
    want_out, want_arg = oracles.maxpool_forward(np.asarray(x), pool_h, pool_w, stride, pad)
    assert out.dtype == x.dtype and arg.dtype == np.int64
    assert out.flags.c_contiguous and arg.flags.c_contiguous
    np.testing.assert_array_equal(out, want_out)  # NaNs compare equal here
    np.testing.assert_array_equal(arg, want_arg)
    np.testing.assert_array_equal(x, x_before)


@SETTINGS
@given(pool_cases(allow_pad=False))
def test_forward_matches_reference_without_pad(case):
    x, pool_h, pool_w, stride, _ = case
    ref = Pooling(pool_h, pool_w, stride, 0)
    want = ref.forward(x)
    out, arg = maxpool_forward(x, pool_h, pool_w, stride, 0)
    np.testing.assert_array_equal(out, want.astype(x.dtype))
    np.testing.assert_array_equal(arg.transpose(0, 2, 3, 1).ravel(), ref.arg_max)


def test_forward_ties_first_maximum_wins():
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    out, arg = maxpool_forward(x, 2, 2, stride=2)
    assert out[0, 0, 0, 0] == 3.0 and arg[0, 0, 0, 0] == 1


def test_forward_first_nan_wins():
    x = np.array([[[[1.0, np.nan], [5.0, np.nan]]]])
    out, arg = maxpool_forward(x, 2, 2, stride=2)
    assert np.isnan(out[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 1


def test_forward_padding_never_wins():
    x = -np.ones((1, 1, 3, 3))
    x[0, 0, 1, 1] = -5.0
    out, arg = maxpool_forward(x, 2, 2, stride=1, pad=1)
    assert np.all(out == -1.0)  # the reference's zero padding would give 0
    # top-left window holds only cell (0, 0) of the image, at window index (1, 1)
    assert arg[0, 0, 0, 0] == 3


@pytest.mark.parametrize(
    "shape,pool,stride", [((4, 3, 24, 24), 2, 2), ((2, 5, 32, 32), 3, 2), ((2, 2, 33, 17), 3, 1)]
)
@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_benchmark_shapes(shape, pool, stride, pad, dtype):
    # long rows take the vectorised interior path; compare it against the slow loop
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out, arg = maxpool_forward(x, pool, pool, stride, pad)
    want_out, want_arg = oracles.maxpool_forward(x, pool, pool, stride, pad)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(arg, want_arg)


def test_forward_integer_input_gives_float64():
    x = np.arange(16).reshape(1, 1, 4, 4)
    out, arg = maxpool_forward(x, 2, 2, stride=2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, 0], [[5.0, 7.0], [13.0, 15.0]])
    np.testing.assert_array_equal(arg[0, 0], [[3, 3], [3, 3]])


# ------------------------------------------------------------------ backward
@SETTINGS
@given(pool_cases(), st.sampled_from(["C", "stepped"]))
def test_backward_matches_slow_loop(case, dout_layout):
    x, pool_h, pool_w, stride, pad = case
    _, arg = maxpool_forward(x, pool_h, pool_w, stride, pad)
    rng = np.random.default_rng(0)
    dout = noncontiguous(rng.standard_normal(arg.shape).astype(x.dtype), dout_layout)
    dout_before, arg_before = dout.copy(), arg.copy()
    dx = maxpool_backward(dout, arg, x.shape, pool_h, pool_w, stride, pad)
    want = oracles.maxpool_backward(
        np.asarray(dout), arg, x.shape, pool_h, pool_w, stride, pad, dtype=dout.dtype
    )
    assert dx.dtype == x.dtype and dx.shape == x.shape and dx.flags.c_contiguous
    np.testing.assert_allclose(dx, want, rtol=1e-6 if x.dtype == np.float32 else 1e-14)
    np.testing.assert_array_equal(dout, dout_before)
    np.testing.assert_array_equal(arg, arg_before)


@SETTINGS
@given(pool_cases(allow_pad=False))
def test_backward_matches_reference_without_pad(case):
    x, pool_h, pool_w, stride, _ = case
    ref = Pooling(pool_h, pool_w, stride, 0)
    ref.forward(x)
    _, arg = maxpool_forward(x, pool_h, pool_w, stride, 0)
    dout = np.random.default_rng(3).standard_normal(arg.shape)
    want = ref.backward(dout)
    dx = maxpool_backward(dout, arg, x.shape, pool_h, pool_w, stride, 0)
    np.testing.assert_allclose(dx, want, rtol=1e-13, atol=1e-15)


def test_backward_overlapping_windows_accumulate():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # the max of all four 2x2 windows (stride 1)
    _, arg = maxpool_forward(x, 2, 2, stride=1)
    dx = maxpool_backward(np.ones((1, 1, 2, 2)), arg, x.shape, 2, 2, stride=1)
    assert dx[0, 0, 1, 1] == 4.0 and dx.sum() == 4.0


def test_backward_accepts_int32_argmax_and_keeps_float32():
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    _, arg = maxpool_forward(x, 2, 2, stride=2)
    dout = np.ones(arg.shape, dtype=np.float32)
    dx = maxpool_backward(dout, arg.astype(np.int32), x.shape, 2, 2, stride=2)
    assert dx.dtype == np.float32
    want = oracles.maxpool_backward(dout, arg, x.shape, 2, 2, 2, 0, dtype=dout.dtype)
    np.testing.assert_array_equal(dx, want)


# ------------------------------------------------------------------ validation
X = np.zeros((2, 3, 6, 6))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(pool_h=0, pool_w=2), ValueError, "pool_h"),
        (dict(pool_h=2, pool_w=0), ValueError, "pool_w"),
        (dict(pool_h=2.0, pool_w=2), TypeError, "pool_h"),
        (dict(pool_h=2, pool_w=2, stride=0), ValueError, "stride"),
        (dict(pool_h=2, pool_w=2, pad=-1), ValueError, "pad"),
        (dict(pool_h=2, pool_w=3, pad=2), ValueError, "pad"),
        (dict(pool_h=3, pool_w=2, pad=2), ValueError, "pad"),
        (dict(pool_h=7, pool_w=2), ValueError, "pool_h"),
        (dict(pool_h=2, pool_w=7), ValueError, "pool_w"),
    ],
)
def test_forward_rejects_bad_window(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        maxpool_forward(X, **kwargs)


def test_forward_rejects_bad_input():
    with pytest.raises(ValueError, match="x"):
        maxpool_forward(np.zeros((3, 6, 6)), 2, 2)
    with pytest.raises(TypeError, match="x"):
        maxpool_forward(np.zeros((1, 1, 4, 4), dtype=complex), 2, 2)
    with pytest.raises(ValueError, match="pad"):
        maxpool_forward(np.zeros((1, 1, 0, 4)), 2, 2, pad=1)


def test_backward_rejects_bad_arguments():
    out, arg = maxpool_forward(X, 2, 2, stride=2)
    dout = np.ones_like(out)
    with pytest.raises(ValueError, match="dout"):
        maxpool_backward(dout[:, :, :2], arg, X.shape, 2, 2, stride=2)
    with pytest.raises(ValueError, match="argmax"):
        maxpool_backward(dout, arg[:, :2], X.shape, 2, 2, stride=2)
    with pytest.raises(TypeError, match="argmax"):
        maxpool_backward(dout, arg.astype(np.float64), X.shape, 2, 2, stride=2)
    bad = arg.copy()
    bad[0, 0, 0, 0] = 4
    with pytest.raises(ValueError, match="argmax"):
        maxpool_backward(dout, bad, X.shape, 2, 2, stride=2)
    bad[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="argmax"):
        maxpool_backward(dout, bad, X.shape, 2, 2, stride=2)
    with pytest.raises(ValueError, match="input_shape"):
        maxpool_backward(dout, arg, (2, 3, 6), 2, 2, stride=2)
    with pytest.raises(ValueError, match="dout"):
        maxpool_backward(dout, arg, (2, 3, 8, 8), 2, 2, stride=2)
    with pytest.raises(ValueError, match="pad"):
        maxpool_backward(dout, arg, X.shape, 2, 2, stride=2, pad=2)


def test_backward_ignores_an_argmax_pointing_into_padding():
    # the forward never produces one, but a caller-made argmax may: it contributes nothing
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    out, argmax = maxpool_forward(x, 2, 2, stride=2, pad=1)
    forged = argmax.copy()
    forged[0, 0, 0, 0] = 0  # window (0, 0) cell (0, 0) is the padded corner
    dout = np.ones_like(out)
    dx = maxpool_backward(dout, forged, x.shape, 2, 2, stride=2, pad=1)
    expected = maxpool_backward(dout, argmax, x.shape, 2, 2, stride=2, pad=1)
    expected[0, 0, 0, 0] -= 1.0  # the genuine winner of window (0, 0) lost its gradient
    np.testing.assert_array_equal(dx, expected)
