"""nnlayers' activation/loss functions and numerical_gradient against nnlayers.reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlayers
import nnlayers.reference as ref
from strategies import assert_close, dtypes, in_layout, layouts, make_values, seeds

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@settings(max_examples=30)
@given(shape=shapes, dtype=dtypes, layout=layouts, seed=seeds)
def test_elementwise_functions_match_reference(shape, dtype, layout, seed):
    x = make_values(seed, shape, dtype, "ties") * np.asarray(1.5, dtype)  # exact zeros too
    xin = in_layout(x, layout)
    for name in ("identity_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad"):
        got = getattr(nnlayers, name)(xin)
        expected = getattr(ref, name)(x)
        assert got.dtype == expected.dtype, name
        assert_close(got, expected, dtype, err_msg=name)
    got = nnlayers.step_function(xin)
    np.testing.assert_array_equal(got, ref.step_function(x))
    assert got.dtype == ref.step_function(x).dtype
    np.testing.assert_array_equal(xin, x)


def test_relu_grad_is_one_at_zero_like_the_reference():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(nnlayers.relu_grad(x), [0.0, 1.0, 1.0])


def test_step_function_accepts_lists():
    np.testing.assert_array_equal(nnlayers.step_function([-1.0, 0.0, 2.0]), [0, 0, 1])


@settings(max_examples=30)
@given(
    shape=shapes,
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
    shift=st.sampled_from([0.0, 500.0, -500.0]),
)
def test_softmax_matches_reference_over_the_last_axis(shape, dtype, layout, seed, shift):
    x = make_values(seed, shape, dtype) * 5 + np.asarray(shift, dtype)
    xin = in_layout(x, layout)
    got = nnlayers.softmax(xin)
    expected = ref.softmax(x.astype(np.float64))
    assert got.dtype == dtype and got.shape == shape
    assert np.all(np.isfinite(got))  # max-shifted: no overflow at +-500
    assert_close(got, expected, dtype)
    assert_close(got.sum(axis=-1), np.ones(shape[:-1]), dtype)
    np.testing.assert_array_equal(xin, x)


def test_softmax_nan_propagates_like_the_reference():
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]])
    got, expected = nnlayers.softmax(x), ref.softmax(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert_close(got[1], expected[1])


@settings(max_examples=30)
@given(
    n=st.integers(1, 5),
    k=st.integers(2, 5),
    dtype=dtypes,
    seed=seeds,
    form=st.sampled_from(["labels", "column", "one-hot", "1-D y labels", "1-D y one-hot"]),
)
def test_cross_entropy_error_matches_reference(n, k, dtype, seed, form):
    y = nnlayers.softmax(make_values(seed, (n, k), dtype) * 2)
    labels = np.random.default_rng(seed).integers(0, k, size=n)
    onehot = np.eye(k, dtype=dtype)[labels]
    if form == "labels":
        args, ref_args = (y, labels), (y, labels)
    elif form == "column":
        # the reference broadcasts (N, 1) labels into an (N, N) selection; ours means (N,)
        args, ref_args = (y, labels.reshape(n, 1)), (y, labels)
    elif form == "one-hot":
        args, ref_args = (y, onehot), (y, onehot)
    elif form == "1-D y labels":
        args, ref_args = (y[0], labels[:1]), (y[0], labels[:1])
    else:
        args, ref_args = (y[0], onehot[0]), (y[0], onehot[0])
    got = nnlayers.cross_entropy_error(*args)
    expected = ref.cross_entropy_error(*ref_args)
    assert np.ndim(got) == 0
    assert_close(got, expected, dtype)
    assert_close(
        nnlayers.softmax_loss(np.log(args[0]), args[1]),
        ref.softmax_loss(np.log(ref_args[0]), ref_args[1]),
        dtype,
    )


def test_cross_entropy_error_known_value():
    y = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    t = np.array([1, 0])
    expected = -(np.log(0.7 + 1e-7) + np.log(0.5 + 1e-7)) / 2
    assert nnlayers.cross_entropy_error(y, t) == pytest.approx(expected, rel=1e-12)


def test_sum_squared_error_matches_reference():
    y, t = make_values(1, (3, 4)), make_values(2, (3, 4))
    assert nnlayers.sum_squared_error(y, t) == pytest.approx(ref.sum_squared_error(y, t), rel=1e-12)


# ------------------------------------------------------------------ numerical_gradient
def test_numerical_gradient_matches_reference_and_restores_x():
    x = make_values(3, (3, 4))
    saved = x.copy()

    def f(_):
        return np.sum(np.sin(x) * x**2)

    got = nnlayers.numerical_gradient(f, x)
    np.testing.assert_array_equal(x, saved)
    expected = ref.numerical_gradient(f, x)
    np.testing.assert_array_equal(x, saved)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert_close(got, expected)
    analytic = np.cos(x) * x**2 + 2 * x * np.sin(x)
    np.testing.assert_allclose(got, analytic, rtol=1e-6, atol=1e-7)


def test_numerical_gradient_perturbs_shared_array_in_place():
    W = make_values(4, (2, 3))
    seen = []

    def f(_ignored):
        seen.append(W[0, 0])
        return float(np.sum(W * W))

    grad = nnlayers.numerical_gradient(f, W)
    assert_close(grad, 2 * W, scale=1.0)
    # the first two evaluations saw W[0, 0] +- h
    assert seen[0] == pytest.approx(W[0, 0] + 1e-4)
    assert seen[1] == pytest.approx(W[0, 0] - 1e-4)


def test_numerical_gradient_custom_step_and_float32():
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    grad = nnlayers.numerical_gradient(
        lambda v: float(np.sum(v.astype(np.float64) ** 3)), x, h=1e-2
    )
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, 3 * x.astype(np.float64) ** 2, rtol=1e-3)


def test_numerical_gradient_on_a_strided_view_writes_through():
    base = make_values(5, (4, 6))
    view = base[::2, ::3]
    before = base.copy()
    grad = nnlayers.numerical_gradient(lambda _: float(np.sum(base**2)), view)
    assert_close(grad, 2 * view, scale=1.0)
    np.testing.assert_array_equal(base, before)
