"""Every fast layer against nnlayers.reference (or a slow obvious version in oracles.py
where the reference is wrong), over drawn shapes, both float dtypes and several memory
layouts."""

import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkernels
import nnlayers
import nnlayers.reference as ref
import oracles
from conv_routes import ROUTES
from strategies import (
    Window,
    assert_close,
    conv_arrays,
    dtypes,
    in_layout,
    layouts,
    make_values,
    seeds,
    value_styles,
    windows,
)


# ================================================================== Convolution
# The layer is the book's API over nnkernels.ConvolutionEngine, whose passes, routes, dtypes,
# chunking and errors tests/nnkernels/test_engine.py covers: here, that API only.
@settings(max_examples=25)
@given(case=windows(), fn=st.integers(1, 4), dtype=dtypes, layout=layouts, seed=seeds)
def test_convolution_matches_reference(case, fn, dtype, layout, seed):
    g = case
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    xin, dout_in = in_layout(x, layout), in_layout(dout, layout)
    fast = nnlayers.Convolution(W, b, g.stride, g.pad)
    out = fast.forward(xin)
    dx = fast.backward(dout_in)
    expected = oracles.convolution(x, W, b, g.stride, g.pad, dout)
    for name, got, want in zip(("out", "dx", "dW", "db"), (out, dx, fast.dW, fast.db), expected):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert_close(got, want, dtype, err_msg=name)
    np.testing.assert_array_equal(xin, x)
    np.testing.assert_array_equal(dout_in, dout)


def test_convolution_stride_pad_and_route_are_the_engines_read_at_every_forward():
    x, W, b, _ = conv_arrays(61, Window(2, 2, 7, 6, 3, 3, 1, 0), 3, np.float64)
    layer = nnlayers.Convolution(W, b)
    assert (layer.stride, layer.pad, layer.route) == (1, 0, None)
    with pytest.raises(TypeError):
        nnlayers.Convolution(W, b, 1, 0, "matmul")  # route is keyword-only
    layer.stride, layer.pad = 2, 1
    assert (layer._engine.stride, layer._engine.pad) == (2, 1)
    assert_close(layer.forward(x), oracles.convolution(x, W, b, 2, 1))
    for route in ROUTES:
        layer.route = route
        assert layer._engine.route == route
        layer.forward(x)
        assert layer._engine.route_taken == route
    with pytest.raises(ValueError, match="route must be one of"):
        layer.route = "fused"
    assert nnlayers.Convolution(W, b, route="matmul")._engine.route == "matmul"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_convolution_x_dW_and_db_attributes(dtype):
    x, W, b, dout = conv_arrays(62, Window(2, 2, 6, 5, 3, 3, 1, 1), 3, dtype)
    layer = nnlayers.Convolution(W, b, 1, 1)
    assert layer.x is None and layer.dW is None and layer.db is None
    layer.forward(x)
    assert layer.x is x  # kept as the reference keeps it (no copy: already computable)
    layer.backward(dout)
    _, _, dW, db = oracles.convolution(x, W, b, 1, 1, dout)
    assert layer.dW.dtype == layer.db.dtype == dtype
    assert_close(layer.dW, dW, dtype)
    assert_close(layer.db, db, dtype)
    first_dW = layer.dW
    layer.forward(np.asfortranarray(x.astype(np.int16)))
    np.testing.assert_array_equal(layer.x, x.astype(np.int16))  # as computed on: C, float
    assert layer.x.flags.c_contiguous and layer.x.dtype == np.result_type(np.int16, dtype)
    layer.backward(dout)
    assert layer.dW is not first_dW and not np.shares_memory(layer.dW, first_dW)


def test_workspace_limit_fixture_restores(workspace_limit):
    assert workspace_limit(12345) is None
    assert nnlayers.get_workspace_limit() == 12345
    assert workspace_limit(54321) == 12345


def test_workspace_limit_was_restored():
    # runs after the test above in file order
    assert nnlayers.get_workspace_limit() is None


# ================================================================== Pooling
@settings(max_examples=50)
@given(g=windows(max_k=4, max_pad=0), dtype=dtypes, layout=layouts, seed=seeds, style=value_styles)
def test_pooling_matches_reference_without_padding(g, dtype, layout, seed, style):
    x = make_values(seed, g.x_shape, dtype, style)
    dout = make_values(seed + 1, (g.n, g.c, *g.out_hw), dtype)
    xin, dout_in = in_layout(x, layout), in_layout(dout, layout)
    fast = nnlayers.Pooling(g.fh, g.fw, g.stride, 0)
    slow = ref.Pooling(g.fh, g.fw, g.stride, 0)
    out = fast.forward(xin)
    expected = slow.forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)  # a max is exact
    np.testing.assert_array_equal(fast.arg_max, slow.arg_max)
    dx = fast.backward(dout_in)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, slow.backward(dout.astype(np.float64)), dtype)
    np.testing.assert_array_equal(xin, x)
    np.testing.assert_array_equal(dout_in, dout)


@settings(max_examples=40)
@given(
    g=windows(max_k=4, max_hw=7, pad_below_window=True),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    style=value_styles,
)
def test_pooling_with_padding_matches_naive_loops(g, dtype, layout, seed, style):
    x = make_values(seed, g.x_shape, dtype, style)
    dout = make_values(seed + 1, (g.n, g.c, *g.out_hw), dtype)
    fast = nnlayers.Pooling(g.fh, g.fw, g.stride, g.pad)
    out = fast.forward(in_layout(x, layout))
    expected, arg = oracles.maxpool_forward(x, g.fh, g.fw, g.stride, g.pad)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(fast.arg_max, arg.transpose(0, 2, 3, 1).ravel())
    dx = fast.backward(in_layout(dout, layout))
    assert dx.dtype == dtype
    assert_close(
        dx, oracles.maxpool_backward(dout, arg, x.shape, g.fh, g.fw, g.stride, g.pad), dtype
    )


def test_pooling_padding_never_wins_on_negative_input():
    x = -np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    layer = nnlayers.Pooling(2, 2, stride=2, pad=1)
    out = layer.forward(x)
    # windows: {x00}, {x01,x02}, {x03}, ... ; zeros in padding must not be chosen
    expected = np.array([[-1, -2, -4], [-5, -6, -8], [-13, -14, -16]], dtype=float)
    np.testing.assert_array_equal(out[0, 0], expected)
    dx = layer.backward(np.ones_like(out))
    assert dx.sum() == out.size  # every gradient lands inside the image
    np.testing.assert_array_equal(
        dx[0, 0], [[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]]
    )


@pytest.mark.parametrize("ph, pw, stride", [(3, 3, 1), (3, 2, 2), (4, 3, 1), (2, 2, 1)])
def test_pooling_overlapping_windows_accumulate_gradient(ph, pw, stride):
    oh, ow = (7 - ph) // stride + 1, (6 - pw) // stride + 1
    x = make_values(81, (2, 3, 7, 6), style="ties")
    dout = make_values(82, (2, 3, oh, ow))
    fast = nnlayers.Pooling(ph, pw, stride)
    slow = ref.Pooling(ph, pw, stride)
    np.testing.assert_array_equal(fast.forward(x), slow.forward(x))
    assert_close(fast.backward(dout), slow.backward(dout.copy()))
    # a unique maximum receives one unit of gradient from every window that contains it
    x[:, :, 2, 2] = 10.0
    fast.forward(x)
    dx = fast.backward(np.ones((2, 3, oh, ow)))
    windows_y = sum(1 for oy in range(oh) if oy * stride <= 2 < oy * stride + ph)
    windows_x = sum(1 for ox in range(ow) if ox * stride <= 2 < ox * stride + pw)
    assert windows_y * windows_x > 1
    np.testing.assert_array_equal(dx[:, :, 2, 2], windows_y * windows_x)
    assert dx.sum() == 2 * 3 * oh * ow


def test_pooling_ties_give_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    layer = nnlayers.Pooling(2, 2, stride=2)
    layer.forward(x)
    np.testing.assert_array_equal(layer.arg_max, [0])
    np.testing.assert_array_equal(
        layer.backward(np.full((1, 1, 1, 1), 3.0))[0, 0], [[3, 0], [0, 0]]
    )


def test_pooling_nan_propagates_like_the_reference():
    x = make_values(91, (1, 2, 4, 4))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 3, 2] = np.inf
    fast, slow = nnlayers.Pooling(2, 2, 2), ref.Pooling(2, 2, 2)
    np.testing.assert_array_equal(fast.forward(x), slow.forward(x))
    np.testing.assert_array_equal(fast.arg_max, slow.arg_max)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.uint8])
def test_pooling_integer_input_becomes_float64(dtype):
    x = make_values(92, (2, 2, 4, 4), style="ties")
    x = (x > 0).astype(dtype) if dtype == np.bool_ else (x + 2).astype(dtype)
    out = nnlayers.Pooling(2, 2, 2).forward(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref.Pooling(2, 2, 2).forward(x.astype(np.float64)))


def test_pooling_arg_max_can_be_assigned_in_the_reference_layout():
    x = make_values(93, (2, 3, 4, 6))
    dout = make_values(94, (2, 3, 2, 3))
    fast, slow = nnlayers.Pooling(2, 2, 2), ref.Pooling(2, 2, 2)
    fast.forward(x)
    slow.forward(x)
    forced = np.zeros_like(slow.arg_max)  # everything to the top-left cell
    fast.arg_max = forced.copy()
    slow.arg_max = forced.copy()
    np.testing.assert_array_equal(fast.arg_max, forced)
    assert_close(fast.backward(dout), slow.backward(dout.copy()))


# ================================================================== BatchNormalization
@st.composite
def bn_shapes(draw):
    n = draw(st.integers(1, 5))
    if draw(st.booleans()):
        return (n, draw(st.integers(1, 6)))
    return (n, draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))


@settings(max_examples=40)
@given(
    shape=bn_shapes(),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    momentum=st.sampled_from([0.9, 0.5, 0.0]),
    steps=st.integers(1, 3),
)
def test_batchnorm_matches_reference(shape, dtype, layout, seed, momentum, steps):
    D = int(np.prod(shape[1:]))
    gamma = make_values(seed, (D,), dtype) + np.asarray(1.0, dtype)
    beta = make_values(seed + 1, (D,), dtype)
    fast = nnlayers.BatchNormalization(gamma, beta, momentum)
    slow = ref.BatchNormalization(gamma.astype(np.float64), beta.astype(np.float64), momentum)
    for step in range(steps):
        x = make_values(seed + 10 * step, shape, dtype) * 2 + 0.5
        dout = make_values(seed + 10 * step + 5, shape, dtype)
        xin, dout_in = in_layout(x, layout), in_layout(dout, layout)
        out = fast.forward(xin, train_flg=True)
        expected = slow.forward(x.astype(np.float64), train_flg=True)
        assert out.dtype == dtype and out.shape == shape
        # float32 rounding of x is amplified by 1/std: scale the tolerance by it
        cond = float(np.abs(x).max() / slow.std.min())
        assert_close(out, expected, dtype, scale=max(1.0, float(np.abs(gamma).max()) * cond))
        dx = fast.backward(dout_in)
        assert dx.dtype == dtype and dx.shape == shape
        assert_close(
            dx,
            slow.backward(dout.astype(np.float64)),
            dtype,
            scale=max(
                1.0, float(np.abs(gamma).max() * np.abs(dout).max()) * cond / float(slow.std.min())
            ),
        )
        assert_close(fast.dgamma, slow.dgamma, dtype)
        assert_close(fast.dbeta, slow.dbeta, dtype)
        assert_close(fast.running_mean, slow.running_mean, dtype)
        assert_close(fast.running_var, slow.running_var, dtype)
        np.testing.assert_array_equal(xin, x)
        np.testing.assert_array_equal(dout_in, dout)
    x = make_values(seed + 99, shape, dtype)
    out = fast.forward(in_layout(x, layout), train_flg=False)
    assert out.dtype == dtype
    assert_close(
        out,
        slow.forward(x.astype(np.float64), train_flg=False),
        dtype,
        scale=float(np.abs(slow.forward(x.astype(np.float64), False)).max()) + 1.0,
    )


def test_batchnorm_attributes_match_reference():
    x = make_values(101, (4, 2, 3, 3))
    gamma, beta = make_values(102, (18,)) + 1, make_values(103, (18,))
    fast = nnlayers.BatchNormalization(gamma, beta)
    slow = ref.BatchNormalization(gamma, beta)
    fast.forward(x)
    slow.forward(x)
    assert fast.batch_size == slow.batch_size == 4
    assert fast.input_shape == slow.input_shape == x.shape
    assert_close(np.reshape(fast.xn, slow.xn.shape), slow.xn)
    assert_close(np.reshape(fast.xc, slow.xc.shape), slow.xc)
    assert_close(np.ravel(fast.std), slow.std)


def test_batchnorm_test_mode_before_training_uses_zero_running_stats():
    x = make_values(104, (3, 5))
    gamma, beta = np.ones(5), np.zeros(5)
    fast = nnlayers.BatchNormalization(gamma, beta)
    slow = ref.BatchNormalization(gamma, beta)
    assert_close(fast.forward(x, train_flg=False), slow.forward(x, train_flg=False))
    np.testing.assert_array_equal(fast.running_var, np.zeros(5))


def test_batchnorm_given_running_stats_are_used_and_updated():
    x = make_values(105, (4, 3))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 1.0])
    rm, rv = np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 0.5])
    fast = nnlayers.BatchNormalization(gamma, beta, 0.8, rm.copy(), rv.copy())
    slow = ref.BatchNormalization(gamma, beta, 0.8, rm.copy(), rv.copy())
    assert_close(fast.forward(x, False), slow.forward(x, False))
    fast.forward(x)
    slow.forward(x)
    assert_close(fast.running_mean, slow.running_mean)
    assert_close(fast.running_var, slow.running_var)


def test_batchnorm_nan_propagates_like_the_reference():
    x = make_values(106, (4, 3))
    x[1, 2] = np.nan
    gamma, beta = np.ones(3), np.zeros(3)
    out = nnlayers.BatchNormalization(gamma, beta).forward(x)
    expected = ref.BatchNormalization(gamma, beta).forward(x)
    assert np.isnan(expected[:, 2]).all()
    assert_close(out, expected)


@pytest.mark.parametrize(
    "x_dtype, param_dtype, expected",
    [
        (np.int64, np.float64, np.float64),
        (np.int32, np.float32, np.float64),
        (np.bool_, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
        (np.float32, np.float32, np.float32),
    ],
)
def test_batchnorm_dtypes_follow_numpy_promotion(x_dtype, param_dtype, expected):
    x = make_values(110, (6, 4), style="ties")
    x = (x > 0).astype(x_dtype) if x_dtype == np.bool_ else x.astype(x_dtype)
    gamma = (make_values(111, (4,)) + 1).astype(param_dtype)
    beta = make_values(112, (4,)).astype(param_dtype)
    fast = nnlayers.BatchNormalization(gamma, beta)
    slow = ref.BatchNormalization(gamma.astype(np.float64), beta.astype(np.float64))
    out = fast.forward(x)
    assert out.dtype == expected
    assert_close(out, slow.forward(x.astype(np.float64)), expected)
    dout = make_values(113, (6, 4)).astype(expected)
    dx = fast.backward(dout)
    assert dx.dtype == expected
    # 1/std reaches 1e3 for a constant column: scale the tolerance by it
    assert_close(
        dx,
        slow.backward(dout.astype(np.float64)),
        expected,
        scale=float(np.abs(gamma).max() / slow.std.min()),
    )
    assert_close(fast.dgamma, slow.dgamma, expected)


@settings(max_examples=30)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 4),
    h=st.integers(1, 4),
    w=st.integers(1, 5),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    steps=st.integers(1, 3),
)
def test_batchnorm_per_channel_matches_batchnorm2d_math(n, c, h, w, dtype, layout, seed, steps):
    shape = (n, c, h, w)
    gamma = make_values(seed, (c,), dtype) + np.asarray(1.0, dtype)
    beta = make_values(seed + 1, (c,), dtype)
    layer = nnlayers.BatchNormalization(gamma, beta, momentum=0.7, per_channel=True)
    run_mean, run_var = np.zeros(c), np.zeros(c)
    g64, b64 = gamma.astype(np.float64), beta.astype(np.float64)
    for step in range(steps):
        x = make_values(seed + 7 * step, shape, dtype) * 3 - 1
        dout = make_values(seed + 7 * step + 3, shape, dtype)
        out = layer.forward(in_layout(x, layout))
        expected, xn, mean, var, std = oracles.batchnorm_forward(x, g64, b64)
        assert out.dtype == dtype and out.shape == shape
        assert_close(out, expected, dtype)
        run_mean = 0.7 * run_mean + 0.3 * mean
        run_var = 0.7 * run_var + 0.3 * var
        assert layer.running_mean.shape == (c,)
        assert_close(layer.running_mean, run_mean, dtype)
        assert_close(layer.running_var, run_var, dtype)
        dx = layer.backward(in_layout(dout, layout))
        dx_e, dgamma_e, dbeta_e = oracles.batchnorm_backward(dout, xn, std, g64)
        assert dx.dtype == dtype
        assert_close(dx, dx_e, dtype, scale=max(1.0, float(np.abs(dx_e).max())))
        assert_close(layer.dgamma, dgamma_e, dtype)
        assert_close(layer.dbeta, dbeta_e, dtype)
    x = make_values(seed + 50, shape, dtype)
    out = layer.forward(x, train_flg=False)
    expected = oracles.batchnorm_inference(x, g64, b64, run_mean, run_var)
    assert_close(out, expected, dtype, scale=float(np.abs(expected).max()) + 1.0)


def test_batchnorm_per_channel_on_2d_input_is_per_feature():
    x = make_values(107, (5, 4))
    gamma, beta = make_values(108, (4,)) + 1, make_values(109, (4,))
    fast = nnlayers.BatchNormalization(gamma, beta, per_channel=True)
    slow = ref.BatchNormalization(gamma, beta)
    assert_close(fast.forward(x), slow.forward(x))


# ================================================================== Relu / Sigmoid
@settings(max_examples=30)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
)
def test_relu_matches_reference_and_does_not_mutate_dout(shape, dtype, layout, seed):
    x = make_values(seed, shape, dtype, "ties")  # exact zeros included
    dout = make_values(seed + 1, shape, dtype)
    xin, dout_in = in_layout(x, layout), in_layout(dout, layout)
    fast, slow = nnlayers.Relu(), ref.Relu()
    out = fast.forward(xin)
    np.testing.assert_array_equal(out, slow.forward(x.copy()))
    assert out.dtype == dtype
    np.testing.assert_array_equal(fast.mask, slow.mask)
    dx = fast.backward(dout_in)
    assert dx is not dout_in
    np.testing.assert_array_equal(dout_in, dout)  # the reference would have zeroed entries
    np.testing.assert_array_equal(dx, slow.backward(dout.copy()))
    assert dx.dtype == dtype
    np.testing.assert_array_equal(xin, x)


def test_relu_mutation_difference_is_real():
    # the documented reference defect this layer must not copy
    dout = np.ones((2, 2))
    layer = ref.Relu()
    layer.forward(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    assert layer.backward(dout) is dout and dout[0, 1] == 0


def test_relu_nan_propagates_like_the_reference():
    x = np.array([[np.nan, -1.0, 2.0, -np.inf, np.inf]])
    np.testing.assert_array_equal(nnlayers.Relu().forward(x), ref.Relu().forward(x))


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 4), (7,)])
def test_relu_edge_shapes_match_reference(shape):
    x = make_values(126, shape)
    layer, slow = nnlayers.Relu(), ref.Relu()
    out = layer.forward(x)
    np.testing.assert_array_equal(out, slow.forward(x.copy()))
    assert out.shape == shape and layer.mask.shape == shape
    assert layer.backward(np.ones(shape)).shape == shape


def test_relu_zero_dimensional_input_keeps_its_shape():
    layer = nnlayers.Relu()
    out = layer.forward(np.array(-2.0))
    assert out.shape == () and layer.mask.shape == ()
    assert layer.backward(np.array(5.0)).shape == ()


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_])
def test_relu_integer_input_becomes_float64(dtype):
    x = np.array([[-2, 0, 3], [1, -1, 0]]).astype(dtype)
    layer, slow = nnlayers.Relu(), ref.Relu()
    out = layer.forward(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, slow.forward(x).astype(np.float64))
    np.testing.assert_array_equal(layer.mask, slow.mask)
    dx = layer.backward(np.ones((2, 3), dtype=dtype))
    assert dx.dtype == np.float64
    np.testing.assert_array_equal(dx, (~slow.mask).astype(np.float64))


@settings(max_examples=30)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
)
def test_sigmoid_matches_reference(shape, dtype, layout, seed):
    x = make_values(seed, shape, dtype) * 4
    dout = make_values(seed + 1, shape, dtype)
    fast, slow = nnlayers.Sigmoid(), ref.Sigmoid()
    out = fast.forward(in_layout(x, layout))
    assert out.dtype == dtype
    assert_close(out, slow.forward(x), dtype)
    assert fast.out is out
    dx = fast.backward(in_layout(dout, layout))
    assert dx.dtype == dtype
    assert_close(dx, slow.backward(dout), dtype)


# ================================================================== Affine
@settings(max_examples=30)
@given(
    n=st.integers(1, 4),
    in_shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    m=st.integers(1, 5),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    scalar_b=st.booleans(),
)
def test_affine_matches_reference(n, in_shape, m, dtype, layout, seed, scalar_b):
    shape = (n, *in_shape)
    D = int(np.prod(in_shape))
    x = make_values(seed, shape, dtype)
    W = make_values(seed + 1, (D, m), dtype)
    b = 0 if scalar_b else make_values(seed + 2, (m,), dtype)
    dout = make_values(seed + 3, (n, m), dtype)
    fast = nnlayers.Affine(in_layout(W, layout), b)
    slow = ref.Affine(W, b)
    xin = in_layout(x, layout)
    out = fast.forward(xin)
    assert out.dtype == dtype
    assert_close(out, slow.forward(x), dtype)
    assert fast.original_x_shape == shape
    dx = fast.backward(in_layout(dout, layout))
    assert dx.shape == shape and dx.dtype == dtype
    assert_close(dx, slow.backward(dout), dtype)
    assert_close(fast.dW, slow.dW, dtype)
    assert_close(fast.db, slow.db, dtype)
    np.testing.assert_array_equal(xin, x)


# ================================================================== SoftmaxWithLoss
@settings(max_examples=30)
@given(
    n=st.integers(1, 6),
    k=st.integers(2, 6),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    label_form=st.sampled_from(["(N,)", "(N,1)", "one-hot"]),
)
def test_softmax_with_loss_matches_reference(n, k, dtype, layout, seed, label_form):
    x = make_values(seed, (n, k), dtype) * 3
    labels = np.random.default_rng(seed).integers(0, k, size=n)
    if label_form == "(N,)":
        t = labels
    elif label_form == "(N,1)":
        t = labels.reshape(n, 1)
    else:
        t = np.eye(k, dtype=dtype)[labels]
    t_saved = np.array(t, copy=True)
    slow = ref.SoftmaxWithLoss()
    expected = slow.forward(x, np.eye(k)[labels] if label_form == "one-hot" else labels)
    dx_expected = slow.backward()
    fast = nnlayers.SoftmaxWithLoss()
    xin = in_layout(x, layout)
    loss = fast.forward(xin, t)
    assert np.ndim(loss) == 0 and np.asarray(loss).dtype == dtype
    assert_close(loss, expected, dtype)
    assert fast.loss == loss
    assert_close(fast.y, slow.y, dtype)
    dx = fast.backward()
    assert dx.dtype == dtype and dx.shape == (n, k)
    assert_close(dx, dx_expected, dtype)
    assert_close(fast.backward(dout=5.0), dx_expected, dtype)  # dout is ignored, as in the book
    np.testing.assert_array_equal(t, t_saved)
    np.testing.assert_array_equal(xin, x)


def test_softmax_with_loss_float_labels_accepted_by_forward_work_in_backward():
    x = make_values(112, (3, 4))
    labels = np.array([1, 3, 0])
    slow = ref.SoftmaxWithLoss()
    expected = slow.forward(x, labels)
    layer = nnlayers.SoftmaxWithLoss()
    assert_close(layer.forward(x, labels.astype(np.float64)), expected)
    assert_close(layer.backward(), slow.backward())


def test_softmax_with_loss_column_labels_differ_from_the_reference_quirk():
    x = make_values(111, (3, 4))
    t = np.array([[1], [3], [0]])
    ours = nnlayers.SoftmaxWithLoss().forward(x, t)
    right = ref.SoftmaxWithLoss().forward(x, t.ravel())
    quirky = ref.SoftmaxWithLoss().forward(x, t)  # broadcasts to a (3, 3) selection
    assert_close(ours, right)
    assert not np.isclose(quirky, right)


# ================================================================== Dropout
@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.0, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_global_seed_gives_the_reference_mask(ratio, dtype):
    x = make_values(121, (4, 3, 5), dtype)
    dout = make_values(122, (4, 3, 5), dtype)
    fast, slow = nnlayers.Dropout(ratio), ref.Dropout(ratio)
    np.random.seed(7)
    out = fast.forward(x)
    np.random.seed(7)
    expected = slow.forward(x)
    np.testing.assert_array_equal(fast.mask, slow.mask)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == dtype
    np.testing.assert_array_equal(fast.backward(dout), slow.backward(dout))
    test_out = fast.forward(x, train_flg=False)
    assert test_out.dtype == dtype
    assert_close(test_out, slow.forward(x, train_flg=False), dtype)
    assert fast.dropout_ratio == ratio


def test_dropout_default_ratio_and_mask_density():
    layer = nnlayers.Dropout()
    assert layer.dropout_ratio == 0.5
    np.random.seed(0)
    layer.forward(np.ones((100, 100)))
    assert 0.45 < layer.mask.mean() < 0.55
    assert layer.mask.dtype == np.bool_


@pytest.mark.parametrize(
    "make_rng", [lambda: 42, lambda: np.random.default_rng(42)], ids=["int", "Generator"]
)
def test_dropout_rng_is_reproducible_and_ignores_global_state(make_rng):
    x = make_values(123, (6, 7))
    a, b = nnlayers.Dropout(0.3, rng=make_rng()), nnlayers.Dropout(0.3, rng=make_rng())
    np.random.seed(1)
    out_a = a.forward(x)
    np.random.seed(2)
    out_b = b.forward(x)
    np.testing.assert_array_equal(out_a, out_b)
    expected_mask = np.random.default_rng(42).random(x.shape) > 0.3
    np.testing.assert_array_equal(a.mask, expected_mask)
    # the stream advances: the next mask differs
    a.forward(x)
    assert not np.array_equal(a.mask, expected_mask)


def test_dropout_rng_generator_is_used_not_copied():
    gen = np.random.default_rng(5)
    layer = nnlayers.Dropout(0.5, rng=gen)
    layer.forward(np.ones((3, 3)))
    assert layer.rng is gen


def test_dropout_does_not_mutate_input():
    x = make_values(124, (3, 4))
    saved = x.copy()
    layer = nnlayers.Dropout(0.5)
    layer.forward(x)
    dout = make_values(125, (3, 4))
    dsaved = dout.copy()
    layer.backward(dout)
    np.testing.assert_array_equal(x, saved)
    np.testing.assert_array_equal(dout, dsaved)


# ------------------------------------------------------------------ batch norm keeps x, not xn
@pytest.fixture
def recycle_small_results(monkeypatch):
    """Layers recycle only results of 1 MiB and more; these tests use small arrays."""
    monkeypatch.setattr(nnlayers.layers, "_RECYCLE_MIN_BYTES", 0)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_xn_and_xc_are_the_forward_normalisation(per_channel, dtype):
    """xn is recomputed on demand, bit for bit what the forward normalised with."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 3, 4, 5)) * 3 + 2).astype(dtype)
    n_stats = 3 if per_channel else 60
    gamma = rng.uniform(0.5, 1.5, n_stats).astype(dtype)
    layer = nnlayers.BatchNormalization(gamma, np.zeros(n_stats, dtype), per_channel=per_channel)
    assert layer.xn is None and layer.xc is None
    layer.forward(x)
    view = x if per_channel else x.reshape(6, -1)
    _, want_xn, _, _, want_std = nnkernels.batchnorm_forward(view, gamma, 0.0)
    assert layer.xn.dtype == dtype and layer.std.dtype == dtype
    np.testing.assert_array_equal(layer.xn, want_xn)
    np.testing.assert_array_equal(layer.std, want_std)
    np.testing.assert_array_equal(
        layer.xc, want_xn * want_std.reshape((1, -1, 1, 1) if per_channel else (1, -1))
    )
    layer.forward(x * 2, train_flg=False)  # inference leaves the training state alone
    np.testing.assert_array_equal(layer.xn, want_xn)


@pytest.mark.parametrize("per_channel", [False, True])
def test_batchnorm_without_features_matches_the_reference(per_channel):
    x = np.ones((3, 0, 2, 2)) if per_channel else np.ones((3, 0))
    fast = nnlayers.BatchNormalization(np.zeros(0), np.zeros(0), per_channel=per_channel)
    out = fast.forward(x)
    dx = fast.backward(np.ones_like(out))
    assert out.shape == dx.shape == x.shape and fast.dgamma.shape == (0,)
    if not per_channel:
        slow = nnlayers.reference.BatchNormalization(np.zeros(0), np.zeros(0))
        assert slow.forward(x).shape == out.shape


def test_batchnorm_forward_allocates_no_normalised_copy():
    """Training forward allocates its output only (the reference also writes xc and xn)."""
    import tracemalloc

    x = np.random.default_rng(4).standard_normal((100, 2000))
    layer = nnlayers.BatchNormalization(np.ones(2000), np.zeros(2000))
    layer.forward(x[:2])  # compile / load the kernels outside the measurement
    layer = nnlayers.BatchNormalization(np.ones(2000), np.zeros(2000))
    tracemalloc.start()
    try:
        layer.forward(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.nbytes <= peak < 1.5 * x.nbytes, (peak, x.nbytes)


def test_batchnorm_backward_uses_the_training_input_it_kept():
    """The layer keeps a reference to its input, as Affine and Convolution do: backward
    gives the gradient of the forward it follows, after later inference calls too."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 30))
    dout = rng.standard_normal((8, 30))
    gamma = rng.uniform(0.5, 1.5, 30)
    fast = nnlayers.BatchNormalization(gamma, np.zeros(30))
    slow = nnlayers.reference.BatchNormalization(gamma.copy(), np.zeros(30))
    fast.forward(x)
    slow.forward(x.copy())
    fast.forward(rng.standard_normal((8, 30)), train_flg=False)
    np.testing.assert_allclose(
        fast.backward(dout), slow.backward(dout.copy()), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(fast.dgamma, slow.dgamma, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ returned arrays stay intact
def _batchnorm(rng, per_channel):
    n_stats = 3 if per_channel else 3 * 4 * 5
    return nnlayers.BatchNormalization(
        rng.uniform(0.5, 1.5, n_stats), rng.standard_normal(n_stats), per_channel=per_channel
    )


def _conv(rng, route):
    return nnlayers.Convolution(rng.standard_normal((4, 3, 3, 3)), np.zeros(4), 1, 1, route=route)


RESULT_LAYERS = {  # name: (layer factory, x shape, dout shape); large enough to be worth reusing
    "batchnorm": (lambda rng: _batchnorm(rng, False), (600, 3, 4, 5), (600, 3, 4, 5)),
    "batchnorm-per-channel": (lambda rng: _batchnorm(rng, True), (600, 3, 4, 5), (600, 3, 4, 5)),
    **{
        f"convolution-{route}": (
            lambda rng, route=route: _conv(rng, route),
            (400, 3, 16, 15),
            (400, 4, 16, 15),
        )
        for route in ROUTES
    },
}

HOLDERS = {  # how a user may keep a result: (hold, read back)
    "variable": (lambda a: a, lambda h: h),
    "view": (lambda a: a[1:], lambda h: h),
    "weak reference to the base": (lambda a: weakref.ref(a), lambda h: h()),
    "memoryview": (lambda a: memoryview(a), lambda h: None if h is None else np.asarray(h)),
    "container": (lambda a: [a], lambda h: h[0]),
    "raw buffer": (lambda a: np.frombuffer(a.data, a.dtype), lambda h: h),
}


@pytest.mark.parametrize("holder", list(HOLDERS))
@pytest.mark.parametrize("name", list(RESULT_LAYERS))
def test_a_returned_array_is_never_written_again(name, holder):
    """However the user holds a result, later calls never change it (no recycling)."""
    make, x_shape, dout_shape = RESULT_LAYERS[name]
    hold, read = HOLDERS[holder]
    rng = np.random.default_rng(6)
    layer = make(rng)
    x1, x2 = rng.standard_normal((2, *x_shape))
    dout1, dout2 = rng.standard_normal((2, *dout_shape))
    held = [hold(layer.forward(x1)), hold(layer.backward(dout1))]
    snapshots = [None if read(h) is None else read(h).copy() for h in held]
    for _ in range(3):
        layer.forward(x2)
        layer.backward(dout2)
    for h, snapshot in zip(held, snapshots):
        value = read(h)
        if value is not None:  # a weak reference may have died: then nothing can be read
            np.testing.assert_array_equal(value, snapshot)


def test_the_columns_attribute_has_the_reference_meaning_and_is_never_rewritten():
    rng = np.random.default_rng(7)
    W, b = rng.standard_normal((4, 3, 3, 3)), np.zeros(4)
    x1, x2 = rng.standard_normal((2, 5, 3, 6, 5))
    for route in ROUTES:
        fast, slow = nnlayers.Convolution(W, b, 1, 1, route=route), ref.Convolution(W, b, 1, 1)
        fast.forward(x1)
        slow.forward(x1)
        col, col_W = fast.col, fast.col_W
        np.testing.assert_allclose(col, slow.col, rtol=0, atol=0)
        np.testing.assert_array_equal(col_W, slow.col_W)
        fast.forward(x2)
        assert fast.col is not col
        np.testing.assert_array_equal(col, slow.col)
