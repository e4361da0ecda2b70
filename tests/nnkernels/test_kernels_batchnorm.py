"""nnkernels batch norm against the reference BatchNormalization and NumPy formulas."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracles
from nnkernels import (
    batchnorm_backward,
    batchnorm_backward_from_input,
    batchnorm_forward,
    batchnorm_inference,
    config_context,
)
from nnkernels.kernels import batchnorm as bn_module
from nnlayers.reference import BatchNormalization
from strategies import bad_out_arrays

SETTINGS = settings(deadline=None, max_examples=30)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
EPS = oracles.BATCHNORM_EPS


def close(actual, expected, dtype, scale=1.0):
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@st.composite
def bn_cases(draw, ndim=None):
    ndim = draw(st.sampled_from([2, 4])) if ndim is None else ndim
    n = draw(st.integers(1, 40))
    if ndim == 2:
        shape = (n, draw(st.integers(1, 600)))  # > 256 features: several feature blocks
    else:
        shape = (n, draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 21)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    layout = draw(st.sampled_from(["C", "F", "stepped"]))
    rng = np.random.default_rng(seed)
    loc = draw(st.sampled_from([0.0, 3.0, -100.0]))
    x = (rng.standard_normal(shape) * draw(st.sampled_from([0.01, 1.0, 10.0])) + loc).astype(dtype)
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "stepped":
        big = np.zeros((2 * shape[0],) + shape[1:], dtype=dtype)
        big[::2] = x
        x = big[::2]
    size = shape[1]
    gamma = rng.standard_normal(size).astype(dtype)
    beta = rng.standard_normal(size).astype(dtype)
    return x, gamma, beta


# ------------------------------------------------------------------ forward
@SETTINGS
@given(bn_cases(ndim=2))
def test_forward_2d_matches_reference(case):
    x, gamma, beta = case
    copies = [a.copy() for a in case]
    out, xn, mean, var, std = batchnorm_forward(x, gamma, beta)
    # the oracle runs in float64 on the same values: the reference in float32 is itself
    # off by ~eps32*|x|/std when the spread is small next to the mean
    ref = BatchNormalization(gamma.astype(np.float64), beta.astype(np.float64))
    want = ref.forward(x.astype(np.float64))
    dtype = x.dtype
    for a in (out, xn, mean, var, std):
        assert a.dtype == dtype
    assert out.shape == x.shape and xn.shape == x.shape and mean.shape == (x.shape[1],)
    scale = max(1.0, float(np.abs(x).max()))
    close(mean, x.astype(np.float64).mean(axis=0), dtype, scale)
    close(std, ref.std, dtype)
    # normalising cancels |x|/std digits: both oracle and kernel err by about cond*eps
    cond = 10.0 * _condition(x, ref.std)
    close(xn, ref.xn, dtype, cond)
    close(out, want, dtype, cond * max(1.0, float(np.abs(gamma).max())))
    for a, before in zip(case, copies):
        np.testing.assert_array_equal(a, before)


@SETTINGS
@given(bn_cases())
def test_forward_matches_numpy(case):
    x, gamma, beta = case
    out, xn, mean, var, std = batchnorm_forward(x, gamma, beta)
    w_out, w_xn, w_mean, w_var, w_std = oracles.batchnorm_forward(x, gamma, beta)
    dtype = x.dtype
    scale = max(1.0, float(np.abs(x).max()))
    close(mean, w_mean, dtype, scale)
    close(var, w_var, dtype, float(w_var.max()) + EPS)
    close(std, w_std, dtype)
    cond = 10.0 * _condition(x, w_std)
    close(xn, w_xn, dtype, cond)
    close(out, w_out, dtype, cond * max(1.0, float(np.abs(gamma).max())))


def _condition(x, std):
    """How many digits normalising ``x`` cancels: max |x| over the smallest std (>= 1)."""
    return max(1.0, float(np.abs(x).max()) / float(np.min(std)))


def test_forward_float64_agrees_with_reference_tightly():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 300)) * 5 + 2
    gamma, beta = rng.standard_normal(300), rng.standard_normal(300)
    out, xn, mean, var, std = batchnorm_forward(x, gamma, beta)
    ref = BatchNormalization(gamma, beta)
    want = ref.forward(x)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(xn, ref.xn, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(std, ref.std, rtol=1e-12)


def test_forward_4d_few_channels_large_batch():
    # C=1..2 with a large N*H*W splits each channel over several tasks
    rng = np.random.default_rng(8)
    for channels in (1, 2):
        x = rng.standard_normal((64, channels, 32, 32)) * 3 + 7
        out, xn, mean, var, std = batchnorm_forward(x, 1.5, -0.5)
        w = oracles.batchnorm_forward(x, np.full(channels, 1.5), np.full(channels, -0.5))
        for got, want in zip((out, xn, mean, var, std), w):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_forward_scalar_parameters_broadcast_and_keep_float32():
    x = np.random.default_rng(9).standard_normal((5, 3, 4, 4)).astype(np.float32)
    out, xn, mean, var, std = batchnorm_forward(x, 2.0, 0.5)
    assert out.dtype == np.float32 and mean.shape == (3,)
    np.testing.assert_allclose(out, 2.0 * xn + 0.5, rtol=1e-6, atol=1e-6)


def test_forward_is_deterministic():
    x = np.random.default_rng(10).standard_normal((257, 2, 16, 16))
    first = batchnorm_forward(x, 1.0, 0.0)
    for _ in range(3):
        again = batchnorm_forward(x, 1.0, 0.0)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ inference
@SETTINGS
@given(bn_cases())
def test_inference_matches_numpy(case):
    x, gamma, beta = case
    rng = np.random.default_rng(0)
    size = x.shape[1]
    running_mean = rng.standard_normal(size)
    running_var = rng.random(size) + 0.1
    out = batchnorm_inference(x, gamma, beta, running_mean, running_var)
    want = oracles.batchnorm_inference(x, gamma, beta, running_mean, running_var)
    assert out.dtype == x.dtype and out.shape == x.shape
    close(out, want, x.dtype, max(1.0, float(np.abs(want).max())))


def test_inference_2d_matches_reference_test_mode():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((20, 7))
    gamma, beta = rng.standard_normal(7), rng.standard_normal(7)
    ref = BatchNormalization(
        gamma, beta, running_mean=rng.standard_normal(7), running_var=rng.random(7)
    )
    want = ref.forward(x, train_flg=False)
    out = batchnorm_inference(x, gamma, beta, ref.running_mean, ref.running_var)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ backward
@SETTINGS
@given(bn_cases(ndim=2))
def test_backward_2d_matches_reference(case):
    x, gamma, beta = case
    x = x.astype(np.float64)
    gamma, beta = gamma.astype(np.float64), beta.astype(np.float64)
    ref = BatchNormalization(gamma, beta)
    ref.forward(x)
    dout = np.random.default_rng(1).standard_normal(x.shape)
    want = ref.backward(dout.copy())
    _, xn, _, _, std = batchnorm_forward(x, gamma, beta)
    dout_before = dout.copy()
    dx, dgamma, dbeta = batchnorm_backward(dout, xn, std, gamma)
    # dx is a difference of terms of size |gamma/std * dout| (it vanishes exactly for N=2):
    # rounding is relative to those terms, not to dx
    scale = float(np.abs(want).max() + np.abs(gamma / std).max() * np.abs(dout).max())
    np.testing.assert_allclose(dx, want, rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(dgamma, ref.dgamma, rtol=1e-10, atol=1e-10 * len(x))
    np.testing.assert_allclose(dbeta, ref.dbeta, rtol=1e-10, atol=1e-10 * len(x))
    np.testing.assert_array_equal(dout, dout_before)


@SETTINGS
@given(bn_cases())
def test_backward_matches_numpy_formula(case):
    x, gamma, beta = case
    _, xn, _, _, std = batchnorm_forward(x, gamma, beta)
    dout = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype)
    dx, dgamma, dbeta = batchnorm_backward(dout, xn, std, gamma)
    w_dx, w_dgamma, w_dbeta = oracles.batchnorm_backward(dout, xn, std, gamma)
    for got in (dx, dgamma, dbeta):
        assert got.dtype == x.dtype
    m = dout.size // dbeta.size
    close(dbeta, w_dbeta, x.dtype, np.sqrt(m))
    close(dgamma, w_dgamma, x.dtype, np.sqrt(m))
    close(dx, w_dx, x.dtype, float(np.abs(w_dx).max()) + 1.0)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)])
def test_backward_numerical_gradient(shape):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape)
    size = shape[1]
    gamma, beta = rng.standard_normal(size), rng.standard_normal(size)
    weights = rng.standard_normal(shape)

    def loss(x_, gamma_, beta_):
        return float(np.sum(batchnorm_forward(x_, gamma_, beta_)[0] * weights))

    _, xn, _, _, std = batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = batchnorm_backward(weights, xn, std, gamma)

    def numeric(index_array, f):
        grad = np.zeros_like(index_array)
        h = 1e-5
        for idx in np.ndindex(index_array.shape):
            saved = index_array[idx]
            index_array[idx] = saved + h
            up = f()
            index_array[idx] = saved - h
            down = f()
            index_array[idx] = saved
            grad[idx] = (up - down) / (2 * h)
        return grad

    for analytic, param in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        num = numeric(param, lambda: loss(x, gamma, beta))
        rel = np.abs(analytic - num).max() / max(np.abs(num).max(), np.abs(analytic).max())
        assert rel < 1e-6, rel


# ------------------------------------------------------------------ validation
X2 = np.zeros((4, 3))
G = np.ones(3)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: batchnorm_forward(np.zeros((4, 3, 2)), G, G), ValueError, "x"),
        (lambda: batchnorm_forward(X2, np.ones(4), G), ValueError, "gamma"),
        (lambda: batchnorm_forward(X2, G, np.ones((3, 1))), ValueError, "beta"),
        (lambda: batchnorm_forward(np.zeros((2, 3, 4, 4)), np.ones(48), G), ValueError, "gamma"),
        (lambda: batchnorm_forward(X2, G, G, eps=0.0), ValueError, "eps"),
        (lambda: batchnorm_forward(X2, G, G, eps=-1e-5), ValueError, "eps"),
        (lambda: batchnorm_forward(X2, G, G, eps=float("nan")), ValueError, "eps"),
        (lambda: batchnorm_forward(X2, G, G, eps=float("inf")), ValueError, "eps"),
        (lambda: batchnorm_forward(X2, G, G, eps="1e-6"), TypeError, "eps"),
        (lambda: batchnorm_forward(X2, G, G, eps=True), TypeError, "eps"),
        (lambda: batchnorm_forward(np.zeros((0, 3)), G, G), ValueError, "x"),
        (lambda: batchnorm_forward(X2.astype(complex), G, G), TypeError, "dtype"),
        (lambda: batchnorm_inference(X2, G, G, np.zeros(2), G), ValueError, "running_mean"),
        (lambda: batchnorm_inference(X2, G, G, np.zeros(3), np.ones(4)), ValueError, "running_var"),
        (lambda: batchnorm_inference(X2, G, G, np.zeros(3), G, eps=0), ValueError, "eps"),
        (lambda: batchnorm_inference(np.zeros(3), G, G, np.zeros(3), G), ValueError, "x"),
        (lambda: batchnorm_backward(np.zeros(3), X2, G, G), ValueError, "dout"),
        (lambda: batchnorm_backward(X2, np.zeros((4, 2)), G, G), ValueError, "xn"),
        (lambda: batchnorm_backward(X2, X2, np.ones(2), G), ValueError, "std"),
        (lambda: batchnorm_backward(X2, X2, G, np.ones(2)), ValueError, "gamma"),
        (
            lambda: batchnorm_forward(X2, G, G, return_xn=False, xn_out=np.empty((4, 3))),
            ValueError,
            "xn_out was given with return_xn=False",
        ),
        (lambda: batchnorm_forward(X2, G, G, stats_dtype=np.float16), ValueError, "stats_dtype"),
        (lambda: batchnorm_forward(X2, G, G, stats_dtype="bogus"), ValueError, "stats_dtype"),
        (lambda: batchnorm_forward(X2, G, G, return_xn="no"), TypeError, "return_xn"),
        (lambda: batchnorm_forward(X2, G, G, return_xn=None), TypeError, "return_xn"),
        (
            lambda: batchnorm_forward(
                X2.astype(np.float32),
                G.astype(np.float32),
                G.astype(np.float32),
                stats_dtype=np.int64,
            ),
            ValueError,
            "stats_dtype",
        ),
        (lambda: batchnorm_backward_from_input(np.zeros(3), X2, G, G, G), ValueError, "dout"),
        (
            lambda: batchnorm_backward_from_input(X2, np.zeros((4, 2)), G, G, G),
            ValueError,
            "x must have",
        ),
        (lambda: batchnorm_backward_from_input(X2, X2, np.ones(2), G, G), ValueError, "mean"),
        (lambda: batchnorm_backward_from_input(X2, X2, G, np.ones((3, 1)), G), ValueError, "std"),
        (lambda: batchnorm_backward_from_input(X2, X2, G, G, np.ones(2)), ValueError, "gamma"),
        (
            lambda: batchnorm_backward_from_input(np.zeros((0, 3)), np.zeros((0, 3)), G, G, G),
            ValueError,
            "dout",
        ),
        (lambda: batchnorm_backward_from_input(X2, X2.astype(complex), G, G, G), TypeError, "x"),
        (lambda: batchnorm_backward_from_input(X2, X2, G.astype(complex), G, G), TypeError, "mean"),
    ],
)
def test_validation_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------ both algorithms
# Inputs with many features (or little work) take the one-launch kernels; few features over
# many rows (or few channels over a large batch) split the rows into tasks instead. Both
# paths must agree with NumPy.
@pytest.mark.parametrize(
    "shape", [(400, 100), (3, 700), (40, 1300), (2000, 3), (64, 2, 16, 16), (2, 12, 5, 5)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_and_split_paths_match_numpy(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    size = shape[1]
    gamma = rng.standard_normal(size).astype(dtype)
    beta = rng.standard_normal(size).astype(dtype)
    out, xn, mean, var, std = batchnorm_forward(x, gamma, beta)
    w_out, w_xn, w_mean, w_var, w_std = oracles.batchnorm_forward(x, gamma, beta)
    scale = 10.0 * max(1.0, float(np.abs(gamma).max()))
    close(out, w_out, dtype, scale)
    close(mean, w_mean, dtype, 10.0)
    close(std, w_std, dtype, 10.0)
    dout = rng.standard_normal(shape).astype(dtype)
    dx, dgamma, dbeta = batchnorm_backward(dout, xn, std, gamma)
    w_dx, w_dgamma, w_dbeta = oracles.batchnorm_backward(dout, xn, std, gamma)
    terms = float(np.abs(gamma / std).max()) * 10.0
    close(dx, w_dx, dtype, terms)
    close(dgamma, w_dgamma, dtype, float(np.sqrt(x.size)) * 10)
    close(dbeta, w_dbeta, dtype, float(np.sqrt(x.size)) * 10)
    running = batchnorm_inference(x, gamma, beta, mean, var)
    close(running, w_out, dtype, scale)


def _every_result(x, dout, gamma, beta):
    """Everything the four public functions return for one input, as a list of arrays."""
    out, xn, mean, var, std = batchnorm_forward(x, gamma, beta)
    grads = batchnorm_backward(dout, xn, std, gamma)
    out2, _, mean64, var64, std64 = batchnorm_forward(
        x, gamma, beta, return_xn=False, stats_dtype=np.float64
    )
    grads2 = batchnorm_backward_from_input(dout, x, mean64, std64, gamma)
    return [out, xn, mean, var, std, *grads, out2, mean64, var64, std64, *grads2]


def _on_path(monkeypatch, fused, call):
    with monkeypatch.context() as patch:
        patch.setattr(bn_module, "_fused", lambda xv: xv.size > 0 and fused)
        return call()


def _assert_same_bits(first, second):
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


# (N, D) with several row runs and feature blocks, (N, C, L) with several image runs, and
# shapes that take either path by default
_BOTH_PATH_SHAPES = [
    (7, 5),
    (4000, 100),
    (3000, 300),
    (40, 1300),
    (2, 600),
    (64, 2, 32, 32),
    (9, 3, 7, 5),
    (2, 12, 5, 5),
]


@pytest.mark.parametrize("shape", _BOTH_PATH_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_and_split_paths_give_the_same_bits(shape, dtype, monkeypatch):
    """The module's promise: both paths sum the same runs in the same order with the same
    formulas, so every result is identical whichever path a shape is forced down."""
    x, dout, gamma, beta = _case(shape, dtype, loc=40.0)
    fused = _on_path(monkeypatch, True, lambda: _every_result(x, dout, gamma, beta))
    split = _on_path(monkeypatch, False, lambda: _every_result(x, dout, gamma, beta))
    _assert_same_bits(fused, split)
    xv = x if x.ndim == 2 else x.reshape(shape[0], shape[1], -1)
    if shape in ((4000, 100), (3000, 300), (64, 2, 32, 32)):
        assert bn_module._runs(xv) > 1  # the runs are merged, not one sum per feature


@pytest.mark.parametrize("shape", [(4000, 100), (64, 2, 32, 32)])
def test_parallel_threshold_moves_a_shape_between_paths_without_changing_results(shape):
    x, dout, gamma, beta = _case(shape, np.float32)
    xv = x if x.ndim == 2 else x.reshape(shape[0], shape[1], -1)
    with config_context(parallel_threshold=0):
        assert not bn_module._fused(xv)
        split = _every_result(x, dout, gamma, beta)
    with config_context(parallel_threshold=x.size + 1):
        assert bn_module._fused(xv)
        fused = _every_result(x, dout, gamma, beta)
    _assert_same_bits(fused, split)


@SETTINGS
@given(bn_cases())
def test_fused_and_split_paths_give_the_same_bits_on_drawn_cases(case):
    x, gamma, beta = case
    dout = np.random.default_rng(4).standard_normal(x.shape).astype(x.dtype)
    results = []
    for fused in (True, False):
        original = bn_module._fused
        bn_module._fused = lambda xv, fused=fused: xv.size > 0 and fused
        try:
            results.append(_every_result(x, dout, gamma, beta))
        finally:
            bn_module._fused = original
    _assert_same_bits(*results)


@pytest.mark.parametrize("shape", [(300, 3), (3000, 3), (50, 2, 9, 9)])
def test_variance_of_data_far_from_zero_is_accurate_on_both_paths(shape, monkeypatch):
    """A mean 1e6 standard deviations from zero: sums of squares would lose about 12 of the
    16 digits (n * u * mean**2 / var); the shifted sums keep them."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal(shape) + 1e6
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    mean = np.mean(x, axis=axes, keepdims=True)
    want = np.mean((x - mean) ** 2, axis=axes)
    for fused in (True, False):
        var = _on_path(monkeypatch, fused, lambda: batchnorm_forward(x, 1.0, 0.0)[3])
        np.testing.assert_allclose(var, want, rtol=1e-9)


# ------------------------------------------------------------------ xn_out / out
@pytest.mark.parametrize(
    "shape",
    [(7, 5), (6, 700), (3, 4, 5, 6), (400, 100), (4, 2, 80, 80)],
    ids=["2d-small", "2d-fused", "4d", "2d-split", "4d-split"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_given_output_arrays_are_filled_and_returned(shape, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    n_stats = shape[1]
    gamma = rng.uniform(0.5, 1.5, n_stats).astype(dtype)
    beta = rng.standard_normal(n_stats).astype(dtype)
    fresh = batchnorm_forward(x, gamma, beta)
    xn_out, out = np.full(shape, np.nan, dtype=dtype), np.full(shape, np.nan, dtype=dtype)
    given = batchnorm_forward(x, gamma, beta, xn_out=xn_out, out=out)
    assert given[1] is xn_out and given[0] is out
    for a, b in zip(fresh, given):
        np.testing.assert_array_equal(a, b)
    fresh_grads = batchnorm_backward(dout, fresh[1], fresh[4], gamma)
    dx_out = np.full(shape, np.nan, dtype=dtype)
    grads = batchnorm_backward(dout, fresh[1], fresh[4], gamma, out=dx_out)
    assert grads[0] is dx_out
    for a, b in zip(fresh_grads, grads):
        np.testing.assert_array_equal(a, b)


def _forward_with(name, array):
    return batchnorm_forward(np.ones((4, 6)), np.ones(6), np.zeros(6), **{name: array})


def _backward_with(array):
    return batchnorm_backward(np.ones((4, 6)), np.zeros((4, 6)), np.ones(6), np.ones(6), out=array)


@pytest.mark.parametrize("array", bad_out_arrays((4, 6), np.float64))
@pytest.mark.parametrize(
    "call",
    [lambda a: _forward_with("xn_out", a), lambda a: _forward_with("out", a), _backward_with],
    ids=["forward-xn_out", "forward-out", "backward-out"],
)
def test_bad_output_array_raises_before_any_kernel(call, array, forbid_kernels):
    forbid_kernels()
    with pytest.raises(ValueError, match=r"(xn_out|out) must be a writeable C-contiguous float64"):
        call(array)


@pytest.mark.parametrize("name", ["xn_out", "out"])
@pytest.mark.parametrize("target", ["x", "gamma", "beta"])
def test_forward_output_sharing_memory_with_an_input_raises(name, target, forbid_kernels):
    """Writing a result over an input would mutate it (and read it while written): refused."""
    store = np.linspace(-1.0, 1.0, 4 * 6 + 12)
    args = {"x": np.linspace(-2.0, 2.0, 24).reshape(4, 6), "gamma": np.ones(6), "beta": np.zeros(6)}
    args[target] = store[: args[target].size].reshape(args[target].shape)
    before = {k: v.copy() for k, v in args.items()}
    forbid_kernels()
    with pytest.raises(ValueError, match=f"{name} must not share memory"):
        batchnorm_forward(
            args["x"], args["gamma"], args["beta"], **{name: store[:24].reshape(4, 6)}
        )
    for k in args:
        np.testing.assert_array_equal(args[k], before[k])


def test_forward_outputs_sharing_memory_raise(forbid_kernels):
    both = np.empty((4, 6))
    forbid_kernels()
    with pytest.raises(
        ValueError, match="out must not share memory with the inputs or other outputs"
    ):
        batchnorm_forward(np.ones((4, 6)), np.ones(6), np.zeros(6), xn_out=both, out=both)


@pytest.mark.parametrize("target", ["dout", "xn", "std", "gamma"])
def test_backward_out_sharing_memory_with_an_input_raises(target, forbid_kernels):
    store = np.linspace(-1.0, 1.0, 24)
    args = {"dout": np.ones((4, 6)), "xn": np.zeros((4, 6)), "std": np.ones(6), "gamma": np.ones(6)}
    args[target] = store[: args[target].size].reshape(args[target].shape)
    before = {k: v.copy() for k, v in args.items()}
    forbid_kernels()
    with pytest.raises(ValueError, match="out must not share memory"):
        batchnorm_backward(**args, out=store.reshape(4, 6))
    for k in args:
        np.testing.assert_array_equal(args[k], before[k])


# ------------------------------------------------------------------ without xn: from the input
_PATH_SHAPES = [(7, 5), (6, 700), (3, 4, 5, 6), (400, 100), (4, 2, 80, 80), (2, 12, 5, 5)]
_PATH_IDS = ["2d-small", "2d-fused", "4d-small", "2d-split", "4d-split", "4d-fused"]


def _case(shape, dtype, seed=6, loc=0.5):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + loc).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    return x, dout, gamma, beta


@pytest.mark.parametrize("shape", _PATH_SHAPES, ids=_PATH_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_without_xn_gives_the_same_output_and_statistics(shape, dtype):
    x, _, gamma, beta = _case(shape, dtype)
    full = batchnorm_forward(x, gamma, beta)
    out_given = np.full(shape, np.nan, dtype=dtype)
    out, xn, mean64, var64, std64 = batchnorm_forward(
        x, gamma, beta, return_xn=False, stats_dtype=np.float64, out=out_given
    )
    assert xn is None and out is out_given
    np.testing.assert_array_equal(out, full[0])
    for got, want in zip((mean64, var64, std64), full[2:]):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got.astype(dtype), want)
    # stats_dtype of the result dtype is the default
    same = batchnorm_forward(x, gamma, beta, stats_dtype=dtype)
    for a, b in zip(same, full):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", _PATH_SHAPES, ids=_PATH_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_from_input_matches_backward_from_xn(shape, dtype):
    """The two backward functions agree to rounding (float32: the stored xn was rounded to
    float32, the recomputed one is not; float64: xn's scale is applied once per feature)."""
    x, dout, gamma, beta = _case(shape, dtype)
    _, xn, _, _, std = batchnorm_forward(x, gamma, beta)
    _, _, mean64, _, std64 = batchnorm_forward(
        x, gamma, beta, return_xn=False, stats_dtype=np.float64
    )
    copies = [a.copy() for a in (dout, x, mean64, std64, gamma)]
    from_xn = batchnorm_backward(dout, xn, std, gamma)
    from_x = batchnorm_backward_from_input(dout, x, mean64, std64, gamma)
    for a, before in zip((dout, x, mean64, std64, gamma), copies):
        np.testing.assert_array_equal(a, before)
    for got in from_x:
        assert got.dtype == dtype  # float64 statistics do not widen float32
    m = dout.size // std.size
    close(from_x[0], from_xn[0], dtype, 10.0 * float(np.abs(gamma / std64).max()))
    close(from_x[1], from_xn[1], dtype, 10.0 * np.sqrt(m))
    np.testing.assert_array_equal(from_x[2], from_xn[2])  # dbeta = sum(dout) either way
    w_dx, w_dgamma, w_dbeta = oracles.batchnorm_backward_from_input(dout, x, mean64, std64, gamma)
    close(from_x[0], w_dx, dtype, 10.0 * float(np.abs(gamma / std64).max()))
    close(from_x[1], w_dgamma, dtype, 10.0 * np.sqrt(m))
    close(from_x[2], w_dbeta, dtype, 10.0 * np.sqrt(m))


@SETTINGS
@given(bn_cases())
def test_backward_from_input_matches_the_reference(case):
    """Hypothesis-drawn shapes, layouts and offsets: forward without xn, backward from x,
    against the reference layer in float64."""
    x, gamma, beta = case
    out, xn, mean, var, std = batchnorm_forward(
        x, gamma, beta, return_xn=False, stats_dtype=np.float64
    )
    assert xn is None
    dout = np.random.default_rng(3).standard_normal(x.shape).astype(x.dtype)
    dx, dgamma, dbeta = batchnorm_backward_from_input(dout, x, mean, std, gamma)
    x64 = x.astype(np.float64)
    _, w_xn, _, _, w_std = oracles.batchnorm_forward(x, gamma, beta)
    w_dx, w_dgamma, w_dbeta = oracles.batchnorm_backward(dout, w_xn, w_std, gamma)
    m = dout.size // w_dbeta.size
    cond = 10.0 * _condition(x, w_std)
    close(dbeta, w_dbeta, x.dtype, np.sqrt(m))
    close(dgamma, w_dgamma, x.dtype, cond * np.sqrt(m))
    close(dx, w_dx, x.dtype, cond * (float(np.abs(gamma / w_std).max()) + 1.0))
    if x.ndim == 2:  # the reference layer has per-feature statistics only
        ref = BatchNormalization(gamma.astype(np.float64), beta.astype(np.float64))
        ref.forward(x64)
        want = ref.backward(dout.astype(np.float64))
        close(dx, want, x.dtype, cond * (float(np.abs(gamma / w_std).max()) + 1.0))


def test_backward_from_input_statistics_of_any_float_dtype():
    x, dout, gamma, _ = _case((6, 5), np.float32)
    _, _, mean, _, std = batchnorm_forward(x, gamma, 0.0)  # float32 statistics
    dx, dgamma, dbeta = batchnorm_backward_from_input(dout, x, mean, std, gamma)
    assert dx.dtype == np.float32
    _, xn, _, _, _ = batchnorm_forward(x, gamma, 0.0)
    w_dx, w_dgamma, _ = oracles.batchnorm_backward(dout, xn, std, gamma)
    close(dx, w_dx, np.float32, 10.0)


def test_backward_from_input_numerical_gradient():
    rng = np.random.default_rng(13)
    for shape in ((6, 4), (3, 2, 3, 4)):
        x = rng.standard_normal(shape)
        gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
        weights = rng.standard_normal(shape)
        _, _, mean, _, std = batchnorm_forward(x, gamma, beta, return_xn=False)
        dx, dgamma, _ = batchnorm_backward_from_input(weights, x, mean, std, gamma)
        h = 1e-5
        for analytic, param in ((dx, x), (dgamma, gamma)):
            num = np.zeros_like(param)
            for idx in np.ndindex(param.shape):
                saved = param[idx]
                param[idx] = saved + h
                up = float(np.sum(batchnorm_forward(x, gamma, beta)[0] * weights))
                param[idx] = saved - h
                down = float(np.sum(batchnorm_forward(x, gamma, beta)[0] * weights))
                param[idx] = saved
                num[idx] = (up - down) / (2 * h)
            rel = np.abs(analytic - num).max() / max(np.abs(num).max(), np.abs(analytic).max())
            assert rel < 1e-6, rel


@pytest.mark.parametrize("target", ["dout", "x", "mean", "std", "gamma"])
def test_backward_from_input_out_sharing_memory_with_an_input_raises(target, forbid_kernels):
    store = np.linspace(-1.0, 1.0, 24)
    args = {
        "dout": np.ones((4, 6)),
        "x": np.zeros((4, 6)),
        "mean": np.zeros(6),
        "std": np.ones(6),
        "gamma": np.ones(6),
    }
    args[target] = store[: args[target].size].reshape(args[target].shape)
    before = {k: v.copy() for k, v in args.items()}
    forbid_kernels()
    with pytest.raises(ValueError, match="out must not share memory"):
        batchnorm_backward_from_input(**args, out=store.reshape(4, 6))
    for k in args:
        np.testing.assert_array_equal(args[k], before[k])


@pytest.mark.parametrize("shape", [(5, 0), (3, 0, 4, 4)])
def test_no_features_or_channels_give_empty_results(shape):
    x = np.ones(shape)
    empty = np.zeros(0)
    out, xn, mean, var, std = batchnorm_forward(x, empty, empty)
    assert out.shape == xn.shape == shape and mean.shape == var.shape == std.shape == (0,)
    for dx, dgamma, dbeta in (
        batchnorm_backward(x, xn, std, empty),
        batchnorm_backward_from_input(x, x, mean, std, empty),
    ):
        assert dx.shape == shape and dgamma.shape == dbeta.shape == (0,)


@pytest.mark.parametrize("fn", ["xn", "from_input"])
def test_backward_out_overlapping_a_non_contiguous_input_raises(fn, forbid_kernels):
    """The overlap check looks at the caller's array, not at the contiguous copy made of it."""
    store = np.random.default_rng(0).standard_normal(12)
    strided = store.reshape(3, 4).T  # (4, 3), not C-contiguous: converted to a copy
    before = strided.copy()
    dout, ones = np.ones((4, 3)), np.ones(3)
    forbid_kernels()
    with pytest.raises(ValueError, match="out must not share memory"):
        if fn == "xn":
            batchnorm_backward(dout, strided, ones, ones, out=store.reshape(4, 3))
        else:
            batchnorm_backward_from_input(
                dout, strided, np.zeros(3), ones, ones, out=store.reshape(4, 3)
            )
    np.testing.assert_array_equal(strided, before)


def test_backward_from_input_zero_std_gives_non_finite_values_like_the_xn_path():
    x = np.arange(12.0).reshape(4, 3)
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        dx, _, _ = batchnorm_backward_from_input(
            np.ones((4, 3)), x, np.zeros(3), np.zeros(3), np.ones(3)
        )
    assert not np.isfinite(dx).all()
    assert not np.isfinite(batchnorm_backward(np.ones((4, 3)), x, np.zeros(3), np.ones(3))[0]).all()
