"""The fused convolution kernels (``nnkernels.conv_forward`` / ``conv_backward``): against
the reference, bit for bit against per-sample columns and ``numpy.matmul``, and their
argument checks."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nnkernels
import nnlayers.reference as ref
import oracles
from strategies import (
    Window,
    assert_close,
    bad_out_arrays,
    conv_arrays,
    dtypes,
    in_layout,
    layouts,
    make_values,
    seeds,
    windows,
)

pytestmark = pytest.mark.skipif(
    not nnkernels.conv_kernels_available(),
    reason="NumPy's BLAS here is not its OpenBLAS wheel build",
)


def _by_columns_and_matmul(x, W, b, dout, stride, pad):
    """What the matmul route computes: the same per-sample products through NumPy."""
    fn, c, fh, fw = W.shape
    n = x.shape[0]
    cols = nnkernels.im2col_per_sample(x, fh, fw, stride, pad)
    weights = W.reshape(fn, -1)
    out = np.matmul(weights, cols) + b.reshape(fn, 1)
    d = dout.reshape(n, fn, -1)
    dW = np.matmul(cols, d.transpose(0, 2, 1)).sum(axis=0).T.reshape(W.shape)
    dx = nnkernels.col2im_per_sample(np.matmul(weights.T, d), x.shape, fh, fw, stride, pad)
    return out.reshape(dout.shape), dx, dW, d.sum(axis=2).sum(axis=0)


@settings(max_examples=60)
@given(
    g=windows(max_n=4),
    fn=st.integers(1, 4),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    n_parts=st.integers(1, 5),
    keep=st.booleans(),
)
def test_matches_the_reference_layer(g, fn, dtype, layout, seed, n_parts, keep):
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    xin, doutin, Win = in_layout(x, layout), in_layout(dout, layout), in_layout(W, layout)
    saved = [a.copy() for a in (xin, doutin, Win)]
    k, p = g.c * g.fh * g.fw, g.out_hw[0] * g.out_hw[1]
    col = np.empty((g.n, k, p), dtype) if keep else None
    out = nnkernels.conv_forward(xin, Win, b, g.stride, g.pad, col=col, n_parts=n_parts)
    dx, dW, db = nnkernels.conv_backward(
        doutin, xin, Win, g.stride, g.pad, col=col, n_parts=n_parts
    )
    assert out.dtype == dx.dtype == dW.dtype == db.dtype == dtype
    expected = oracles.convolution(x, W, b, g.stride, g.pad, dout)
    for name, got, want in zip(("out", "dx", "dW", "db"), (out, dx, dW, db), expected):
        assert_close(got, want, dtype, err_msg=name)
    if keep:
        np.testing.assert_array_equal(
            col, nnkernels.im2col_per_sample(x, g.fh, g.fw, g.stride, g.pad)
        )
    for array, before in zip((xin, doutin, Win), saved):
        np.testing.assert_array_equal(array, before)  # inputs are never modified


@settings(max_examples=40)
@given(
    g=windows(max_n=5, max_c=4, max_hw=10),
    fn=st.integers(2, 5),
    dtype=dtypes,
    seed=seeds,
    n_parts=st.integers(1, 4),
)
def test_same_bits_as_columns_and_matmul(g, fn, dtype, seed, n_parts):
    # NumPy takes matrix-vector routes when a product has a dimension of one; elsewhere
    # both routes make the same BLAS calls per sample, whatever the number of parts
    assume(g.c * g.fh * g.fw > 1 and g.out_hw[0] * g.out_hw[1] > 1)
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    expected = _by_columns_and_matmul(x, W, b, dout, g.stride, g.pad)
    out = nnkernels.conv_forward(x, W, b, g.stride, g.pad, n_parts=n_parts)
    got = (out, *nnkernels.conv_backward(dout, x, W, g.stride, g.pad, n_parts=n_parts))
    for name, e, a in zip(("out", "dx", "dW", "db"), expected, got):
        np.testing.assert_array_equal(a, e, err_msg=name)


def test_out_and_gradient_buffers_are_filled_and_returned():
    g = Window(3, 2, 6, 5, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(7, g, 4, np.float32)
    out = np.full((3, 4, 30), np.nan, np.float32)
    result = nnkernels.conv_forward(x, W, b, 1, 1, out=out)
    assert np.shares_memory(result, out) and result.shape == (3, 4, 6, 5)
    dx = np.full(x.shape, np.nan, np.float32)
    per_sample = np.full((3, 18, 4), np.nan, np.float32)
    got_dx, dW, db = nnkernels.conv_backward(dout, x, W, 1, 1, dx=dx, dW_per_sample=per_sample)
    assert got_dx is dx
    np.testing.assert_array_equal(per_sample.sum(axis=0).T.reshape(W.shape), dW)
    slow = ref.Convolution(W, b, 1, 1)
    assert_close(result, slow.forward(x), np.float32)
    assert_close(dx, slow.backward(dout), np.float32)


@pytest.mark.parametrize("b", [0, 0.5, np.float32(2.0), [1.0]])
def test_scalar_bias(b):
    g = Window(2, 2, 5, 4, 2, 3, 1, 1)
    x, W, _, dout = conv_arrays(11, g, 3, np.float64)
    expected = ref.Convolution(W, np.asarray(b, dtype=np.float64).reshape(-1)[0], 1, 1).forward(x)
    assert_close(nnkernels.conv_forward(x, W, b, 1, 1), expected)


@pytest.mark.parametrize("b", [0, 0.5, True])
def test_a_python_scalar_bias_keeps_float32(b):
    x, W = np.ones((1, 2, 4, 4), np.float32), np.ones((3, 2, 3, 3), np.float32)
    out = nnkernels.conv_forward(x, W, b, 1, 1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :, 0, 0], np.float32(8 + float(b)))


def test_mixed_dtypes_promote_like_numpy():
    g = Window(2, 2, 5, 5, 3, 3, 1, 0)
    x, W, b, dout = conv_arrays(13, g, 2, np.float32)
    out = nnkernels.conv_forward(x, W.astype(np.float64), b, 1, 0)
    assert out.dtype == np.float64
    dx, dW, db = nnkernels.conv_backward(dout.astype(np.float64), x, W, 1, 0)
    assert dx.dtype == dW.dtype == db.dtype == np.float64
    assert_close(dx, oracles.convolution(x, W, b, 1, 0, dout)[1])


def test_empty_batch_no_channels_and_no_filters():
    W = make_values(17, (3, 2, 3, 3))
    assert nnkernels.conv_forward(np.zeros((0, 2, 5, 5)), W, 0.0, 1, 1).shape == (0, 3, 5, 5)
    dx, dW, db = nnkernels.conv_backward(np.zeros((0, 3, 5, 5)), np.zeros((0, 2, 5, 5)), W, 1, 1)
    assert dx.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(dW, np.zeros_like(W))
    np.testing.assert_array_equal(db, np.zeros(3))
    out = nnkernels.conv_forward(np.ones((2, 0, 4, 4)), np.ones((3, 0, 3, 3)), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(
        out, np.broadcast_to([1.0, 2.0, 3.0], (2, 2, 2, 3)).transpose(0, 3, 1, 2)
    )
    dx, dW, db = nnkernels.conv_backward(
        np.ones((2, 0, 2, 2)), np.ones((2, 3, 4, 4)), np.ones((0, 3, 3, 3))
    )
    np.testing.assert_array_equal(dx, np.zeros((2, 3, 4, 4)))
    assert dW.shape == (0, 3, 3, 3) and db.shape == (0,)
    assert nnkernels.conv_forward(
        np.ones((1, 1, 3, 3)), np.ones((0, 1, 2, 2)), np.zeros(0)
    ).shape == (1, 0, 2, 2)


def test_nan_and_inf_propagate():
    g = Window(2, 2, 6, 6, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(19, g, 3, np.float64)
    x[0, 1, 2, 2] = np.nan
    x[1, 0, 5, 5] = np.inf
    assert_close(nnkernels.conv_forward(x, W, b, 1, 1), ref.Convolution(W, b, 1, 1).forward(x))


# ------------------------------------------------------------------ argument checks
X, W3, B3 = np.ones((2, 2, 5, 5)), np.ones((3, 2, 3, 3)), np.zeros(3)


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((np.ones((2, 5, 5)), W3, B3), {}, ValueError, "x must be 4-D"),
        ((X, np.ones((3, 2, 3)), B3), {}, ValueError, "W must be 4-D"),
        ((X, np.ones((3, 4, 3, 3)), B3), {}, ValueError, "x has 2 channels .* but W expects 4"),
        ((X, W3, None), {}, TypeError, "b must be a real numeric array, got None"),
        ((X, W3, "abc"), {}, TypeError, "b must be a real numeric array"),
        ((X, W3, np.zeros(2)), {}, ValueError, "b must have 3 elements"),
        ((X, np.ones((3, 2, 9, 3)), B3), {}, ValueError, "filter_h=9 is larger"),
        ((X, W3, B3, 0), {}, ValueError, "stride must be >= 1"),
        ((X, W3, B3, 1, -1), {}, ValueError, "pad must be >= 0"),
        ((X, W3, B3, 1.5), {}, TypeError, "stride must be an integer"),
        ((X.astype(complex), W3, B3), {}, TypeError, "complex"),
        ((X, W3, B3), {"n_parts": 0}, ValueError, "n_parts must be >= 1"),
        ((X, W3, B3, 1, 1), {"col": np.empty((2, 18, 24))}, ValueError, "col must be"),
    ],
)
def test_forward_bad_arguments_raise_before_any_kernel(
    args, kwargs, error, message, forbid_kernels
):
    forbid_kernels()
    with pytest.raises(error, match=message):
        nnkernels.conv_forward(*args, **kwargs)


@pytest.mark.parametrize("out", bad_out_arrays((2, 3, 25), np.float64))
def test_forward_bad_out_raises(out, forbid_kernels):
    forbid_kernels()
    with pytest.raises(ValueError, match="out must be"):
        nnkernels.conv_forward(X, W3, B3, 1, 1, out=out)


def test_forward_col_sharing_memory_with_x_raises(forbid_kernels):
    forbid_kernels()
    storage = np.ones(2 * 18 * 25 + X.size)
    x = storage[: X.size].reshape(X.shape)
    with pytest.raises(ValueError, match="col must not share memory"):
        nnkernels.conv_forward(x, W3, B3, 1, 1, col=storage[: 2 * 18 * 25].reshape(2, 18, 25))


@pytest.mark.parametrize(
    "dout, kwargs, message",
    [
        (np.ones((2, 3, 4, 4)), {}, "dout must have shape \\(2, 3, 5, 5\\)"),
        (np.ones((2, 4, 5, 5)), {}, "dout must have shape"),
        (np.ones((2, 3, 25, 1)), {}, "dout must have shape"),  # the right size, not shape
        (np.ones((2, 3, 5, 5)), {"dx": np.empty((2, 2, 5, 4))}, "dx must be"),
        (np.ones((2, 3, 5, 5)), {"dW_per_sample": np.empty((2, 3, 18))}, "dW_per_sample must be"),
        (np.ones((2, 3, 5, 5)), {"col": np.empty((2, 18, 25), np.float32)}, "col must be"),
        (
            np.ones((2, 3, 5, 5)),
            {"col": np.lib.stride_tricks.as_strided(np.empty((2, 18, 25)), writeable=False)},
            "col must be a writeable",
        ),
    ],
)
def test_backward_bad_arguments_raise_before_any_kernel(dout, kwargs, message, forbid_kernels):
    forbid_kernels()
    with pytest.raises(ValueError, match=message):
        nnkernels.conv_backward(dout, X, W3, 1, 1, **kwargs)


def test_without_the_library_blas_a_clear_error(without_library_blas):
    without_library_blas()
    assert not nnkernels.conv_kernels_available()
    for call in (
        lambda: nnkernels.conv_forward(X, W3, B3),
        lambda: nnkernels.conv_backward(np.ones((2, 3, 3, 3)), X, W3),
    ):
        with pytest.raises(
            RuntimeError, match="need the library's BLAS.*scipy-openblas32 is not installed"
        ):
            call()


def test_dout_with_height_and_width_swapped_is_refused():
    x, W = np.ones((2, 2, 4, 6)), np.ones((3, 2, 3, 3))
    nnkernels.conv_backward(np.ones((2, 3, 4, 6)), x, W, 1, 1)
    with pytest.raises(ValueError, match="dout must have shape"):
        nnkernels.conv_backward(np.ones((2, 3, 6, 4)), x, W, 1, 1)


@pytest.mark.parametrize("where", ["out", "col"])
def test_destinations_sharing_memory_with_the_bias_are_refused(where):
    g = Window(4, 2, 5, 5, 3, 3, 1, 1)
    x, W, b, _ = conv_arrays(23, g, 3, np.float64)
    destination = np.zeros((4, 3, 25) if where == "out" else (4, 18, 25))
    shared_b = destination.reshape(-1)[:3]
    shared_b[:] = b
    kwargs = {where: destination}
    with pytest.raises(ValueError, match=f"{where} must not share memory"):
        nnkernels.conv_forward(x, W, shared_b, 1, 1, n_parts=1, **kwargs)


@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8, np.int16, np.bool_])
def test_small_integer_input_with_float32_parameters_stays_float32(x_dtype):
    # NumPy's promotion, as the layer follows it: int8 with float32 is float32
    g = Window(2, 2, 5, 5, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(29, g, 3, np.float32)
    xi = (np.abs(x) * 2).astype(x_dtype)
    out = nnkernels.conv_forward(xi, W, b, 1, 1)
    assert out.dtype == np.float32
    dx, dW, db = nnkernels.conv_backward(dout, xi, W, 1, 1)
    assert dx.dtype == dW.dtype == db.dtype == np.float32
    expected = oracles.convolution(xi, W, b, 1, 1, dout)
    assert_close(out, expected[0], np.float32)
    assert_close(dW, expected[2], np.float32)


def test_columns_are_written_even_without_filters():
    x = make_values(37, (2, 2, 4, 4))
    col = np.full((2, 18, 16), np.nan)
    out = nnkernels.conv_forward(x, np.ones((0, 2, 3, 3)), np.zeros(0), 1, 1, col=col)
    assert out.shape == (2, 0, 4, 4)
    np.testing.assert_array_equal(col, nnkernels.im2col_per_sample(x, 3, 3, 1, 1))
