"""``nnkernels.ConvolutionEngine`` against ``nnlayers.reference`` (``oracles.convolution``)
over drawn shapes, on every route, in both dtypes and odd layouts; the same bits whatever the
route, thread count or workspace limit; inputs never modified, results fresh; clear errors.
"""

import pickle
import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkernels
import nnlayers.reference as ref
import oracles
from conv_routes import ROUTES
from nnkernels import ConvolutionEngine
from strategies import (
    Window,
    assert_close,
    conv_arrays,
    dtypes,
    in_layout,
    layouts,
    make_values,
    seeds,
    windows,
)

routes = st.sampled_from(ROUTES)


@st.composite
def conv_cases(draw, max_n=3):
    """A window and a number of filters."""
    return draw(windows(max_n=max_n)), draw(st.integers(1, 4))


def passes(engine, x, W, b, dout, W_at_backward=None):
    """``(out, dx, dW, db)`` of one forward and backward; checks that no input (nor any
    memory an input views) changed."""
    W_backward = W if W_at_backward is None else W_at_backward
    inputs = [a for a in (x, W, b, dout, W_backward) if isinstance(a, np.ndarray)]
    before = [buffer_of(a) for a in inputs]
    out = engine.forward(x, W, b)
    results = (out, *engine.backward(dout, W_backward))
    for a, saved in zip(inputs, before):
        np.testing.assert_array_equal(buffer_of(a), saved, err_msg="an input changed")
    return results


def buffer_of(a):
    """The whole memory an array views (a copy), to see that nothing in it changed."""
    return np.array(a.base if isinstance(a.base, np.ndarray) else a, copy=True)


def assert_same_bits(got, expected, what=""):
    for name, a, e in zip(("out", "dx", "dW", "db"), got, expected):
        assert a.dtype == e.dtype, f"{name} {what}"
        np.testing.assert_array_equal(a, e, err_msg=f"{name} {what}")


def assert_matches_reference(results, x, W, b, dout, stride, pad, dtype):
    """``results`` (out, dx, dW, db) equal the reference's within ``dtype``'s tolerance."""
    expected = oracles.convolution(x, W, b, stride, pad, dout)
    for name, got, want in zip(("out", "dx", "dW", "db"), results, expected):
        assert got.dtype == dtype, f"{name}: {got.dtype}, expected {dtype}"
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        assert_close(got, want, dtype, err_msg=name)


def assert_fresh(results, others):
    """No two results share memory, nor a result with any of ``others``."""
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            assert not np.shares_memory(a, b)
        for other in others:
            assert not np.shares_memory(a, other)


# ------------------------------------------------------------------ against the reference
@settings(max_examples=60)
@given(
    case=conv_cases(),
    dtype=dtypes,
    layout=st.tuples(layouts, layouts, layouts, layouts),
    seed=seeds,
    route=routes,
)
def test_both_passes_match_the_reference(case, dtype, layout, seed, route):
    g, fn = case
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    given_ = [in_layout(a, how) for a, how in zip((x, W, b, dout), layout)]
    engine = ConvolutionEngine(g.stride, g.pad, route=route)
    results = passes(engine, *given_)
    assert_matches_reference(results, x, W, b, dout, g.stride, g.pad, np.dtype(dtype))
    assert results[0].flags.c_contiguous
    assert engine.route_taken == route
    assert (engine.geometry.out_h, engine.geometry.out_w) == g.out_hw
    assert (engine.geometry.stride, engine.geometry.pad) == (g.stride, g.pad)
    np.testing.assert_array_equal(engine.input, x)
    assert engine.input.dtype == dtype and engine.input.flags.c_contiguous
    assert_fresh(results, [*given_, engine.input])


@settings(max_examples=20)
@given(case=conv_cases(), dtype=dtypes, seed=seeds, route=routes)
def test_backward_takes_the_filters_it_is_given(case, dtype, seed, route):
    """W's values may change between forward and backward (an optimizer step): dx follows
    the new filters, dW and db do not depend on them."""
    g, fn = case
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    W_new = make_values(seed + 5, W.shape, dtype)
    engine = ConvolutionEngine(g.stride, g.pad, route=route)
    _, dx, dW, db = passes(engine, x, W, b, dout, W_at_backward=W_new)
    _, dx_new, dW_ref, db_ref = oracles.convolution(x, W_new, b, g.stride, g.pad, dout)
    assert_close(dx, dx_new, dtype)
    assert_close(dW, dW_ref, dtype)
    assert_close(db, db_ref, dtype)


# ------------------------------------------------------------------ the same bits everywhere
@settings(max_examples=30)
@given(case=conv_cases(max_n=5), dtype=dtypes, seed=seeds)
def test_the_same_bits_on_every_route_and_thread_count(case, dtype, seed):
    g, fn = case
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    results = {}
    for route in ROUTES:
        for threads in (1, 2):
            # split_min_macs=0: even these small convolutions are shared over the threads
            with nnkernels.config_context(threads=threads, split_min_macs=0):
                engine = ConvolutionEngine(g.stride, g.pad, route=route)
                results[route, threads] = passes(engine, x, W, b, dout)
    first_key = (ROUTES[0], 1)
    for key, got in results.items():
        assert_same_bits(got, results[first_key], f"{key} vs {first_key}")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_two_threads_are_available_to_the_test_above():
    """Otherwise the thread-count comparison above compares one thread with itself."""
    with nnkernels.config_context(threads=2):
        assert nnkernels.get_num_threads() == 2


@settings(max_examples=30)
@given(
    case=conv_cases(max_n=7),
    dtype=dtypes,
    seed=seeds,
    per_chunk=st.integers(1, 8),
    threads=st.sampled_from([1, 2]),
    route=routes,
)
def test_a_workspace_limit_gives_the_same_bits(case, dtype, seed, per_chunk, threads, route):
    # The limit shapes the matmul route's column chunks (the kernels take a sample at a
    # time): whole, or in chunks of one sample or several, with a last one shorter.
    g, fn = case
    x, W, b, dout = conv_arrays(seed, g, fn, dtype)
    whole = passes(ConvolutionEngine(g.stride, g.pad, route=route), x, W, b, dout)
    per_sample = g.c * g.fh * g.fw * g.out_hw[0] * g.out_hw[1] * np.dtype(dtype).itemsize
    limit = per_chunk * per_sample
    with nnkernels.config_context(workspace_limit=limit, threads=threads, split_min_macs=0):
        chunked = passes(ConvolutionEngine(g.stride, g.pad, route=route), x, W, b, dout)
    assert_same_bits(chunked, whole)
    assert_matches_reference(chunked, x, W, b, dout, g.stride, g.pad, np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_automatic_chunking_gives_the_whole_batch_bits(monkeypatch, dtype):
    # Large column matrices are chunked without a limit; thresholds lowered to keep it small.
    # Every product is per sample and dW is summed over samples after, so the bits agree.
    from nnkernels import config

    x, W, b, dout = conv_arrays(5, Window(6, 3, 9, 8, 3, 3, 1, 1), 4, dtype)
    per_sample = 3 * 3 * 3 * 9 * 8 * np.dtype(dtype).itemsize
    whole = ConvolutionEngine(1, 1, route="matmul")  # chunking is the matmul route's
    with nnkernels.config_context(workspace_limit=1 << 62):
        expected = passes(whole, x, W, b, dout)
    assert whole._saved.col is not None  # the columns were kept for backward
    monkeypatch.setattr(config, "AUTO_CHUNK_ABOVE", 6 * per_sample - 1)
    monkeypatch.setattr(config, "AUTO_WORKSPACE", 2 * per_sample)
    chunked = ConvolutionEngine(1, 1, route="matmul")
    got = passes(chunked, x, W, b, dout)
    assert chunked._saved.col is None  # columns were recomputed in backward, not kept
    assert_same_bits(got, expected)


@pytest.mark.parametrize("route", ROUTES)
def test_a_workspace_limit_of_one_byte_still_processes_a_sample(route):
    g = Window(5, 2, 7, 6, 3, 2, 2, 1)
    x, W, b, dout = conv_arrays(11, g, 3, np.float64)
    with nnkernels.config_context(workspace_limit=1):
        results = passes(ConvolutionEngine(2, 1, route=route), x, W, b, dout)
    assert_matches_reference(results, x, W, b, dout, 2, 1, np.dtype(np.float64))


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "x_dtype, W_dtype, b_dtype, expected",
    [
        (np.float32, np.float64, np.float64, np.float64),
        (np.float64, np.float32, np.float32, np.float64),
        (np.float32, np.float32, np.float64, np.float64),
        (np.float32, np.float32, np.float32, np.float32),
        (np.int64, np.float32, np.float32, np.float64),
        (np.int8, np.float32, np.float32, np.float32),
        (np.bool_, np.float64, np.float64, np.float64),
        (np.bool_, np.float32, np.float32, np.float32),
        (np.int32, np.int32, np.int32, np.float64),
        (np.float16, np.float16, np.float16, np.float32),
        (np.float16, np.float64, np.float16, np.float64),
    ],
)
def test_mixed_dtypes_follow_numpy_promotion(x_dtype, W_dtype, b_dtype, expected, route):
    g = Window(2, 3, 6, 5, 3, 2, 1, 1)
    x = make_values(21, g.x_shape, style="ties").astype(x_dtype)
    W = make_values(22, (4, 3, 3, 2), style="ties" if W_dtype == np.int32 else "normal")
    W = W.astype(W_dtype)
    b = make_values(23, (4,)).astype(b_dtype)
    dout = make_values(24, (2, 4, *g.out_hw)).astype(expected)
    results = passes(ConvolutionEngine(1, 1, route=route), x, W, b, dout)
    assert_matches_reference(results, x, W, b, dout, 1, 1, np.dtype(expected))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("limit", [None, 1])
def test_a_float64_dout_after_a_float32_forward_gives_float64_gradients(route, limit):
    g = Window(3, 2, 5, 5, 3, 3, 1, 0)
    x, W, b, dout = conv_arrays(31, g, 2, np.float32)
    engine = ConvolutionEngine(1, 0, route=route)
    with nnkernels.config_context(workspace_limit=limit):
        out = engine.forward(x, W, b)
        dx, dW, db = engine.backward(dout.astype(np.float64), W)
    expected = oracles.convolution(x, W, b, 1, 0, dout)
    assert out.dtype == np.float32
    assert_close(out, expected[0], np.float32)
    for name, got, want in zip(("dx", "dW", "db"), (dx, dW, db), expected[1:]):
        assert got.dtype == np.float64, name
        assert_close(got, want, np.float64, err_msg=name)
    assert engine.input.dtype == np.float32  # the kept input stays as forward made it


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "b, dtype, expected",
    [
        (0, np.float64, np.float64),
        (0.5, np.float32, np.float32),  # a Python float is weak: float32 stays
        (np.float32(2.0), np.float32, np.float32),
        (np.float64(-1.0), np.float64, np.float64),
        # a NumPy float64 is not weak (NumPy 2; NumPy 1.x promotes scalars by value)
        (np.float64(-1.0), np.float32, np.result_type(np.float32, np.float64(-1.0))),
        (np.array(1.5), np.float64, np.float64),
        (np.array([0.25], np.float32), np.float32, np.float32),  # one element for 3 filters
        ("vector", np.float64, np.float64),
        ("vector", np.float32, np.float32),
    ],
)
def test_a_scalar_bias_is_added_to_every_filter(b, dtype, expected, route):
    g = Window(2, 2, 5, 4, 2, 3, 1, 1)
    x, W, bvec, dout = conv_arrays(41, g, 3, dtype)
    b = bvec if isinstance(b, str) else b
    results = passes(ConvolutionEngine(1, 1, route=route), x, W, b, dout.astype(expected))
    assert_matches_reference(results, x, W, b, dout, 1, 1, np.dtype(expected))


# ------------------------------------------------------------------ odd values and sizes
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference's
@pytest.mark.parametrize("route", ROUTES)
def test_nan_and_inf_propagate_like_the_reference(route):
    g = Window(2, 2, 6, 6, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(51, g, 3, np.float64)
    x[0, 1, 2, 2] = np.nan
    x[1, 0, 5, 5] = np.inf
    dout[1, 2, 0, 3] = -np.inf
    results = passes(ConvolutionEngine(1, 1, route=route), x, W, b, dout)
    expected = oracles.convolution(x, W, b, 1, 1, dout)
    assert np.isnan(results[0]).any() and np.isinf(expected[0]).any()
    for name, got, want in zip(("out", "dx", "dW", "db"), results, expected):
        assert not np.isfinite(want).all(), name
        assert_close(got, want, err_msg=name)  # NaN and inf at the same places, the rest close


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_empty_batch_gives_empty_results_and_zero_parameter_gradients(route, dtype):
    W = make_values(71, (3, 2, 3, 3), dtype)
    engine = ConvolutionEngine(1, 1, route=route)
    out = engine.forward(np.zeros((0, 2, 5, 5), dtype), W, np.zeros(3, dtype))
    assert out.shape == (0, 3, 5, 5) and out.dtype == dtype
    dx, dW, db = engine.backward(np.zeros((0, 3, 5, 5), dtype), W)
    assert dx.shape == (0, 2, 5, 5)
    assert dx.dtype == dW.dtype == db.dtype == dtype
    np.testing.assert_array_equal(dW, np.zeros_like(W))
    np.testing.assert_array_equal(db, np.zeros(3))


@pytest.mark.parametrize("route", ROUTES)
def test_no_channels_match_the_reference(route):
    g = Window(2, 0, 5, 4, 3, 2, 1, 1)
    x, W, b, dout = conv_arrays(73, g, 3, np.float64)
    results = passes(ConvolutionEngine(1, 1, route=route), x, W, b, dout)
    assert_matches_reference(results, x, W, b, dout, 1, 1, np.dtype(np.float64))


@pytest.mark.parametrize("route", ROUTES)
def test_no_filters_give_empty_outputs_and_a_zero_input_gradient(route):
    # the reference cannot reshape W of no filters
    g = Window(2, 2, 5, 4, 3, 2, 1, 1)
    x, W, b, dout = conv_arrays(74, g, 0, np.float64)
    engine = ConvolutionEngine(1, 1, route=route)
    out = engine.forward(x, W, b)
    assert out.shape == (2, 0, *g.out_hw)
    dx, dW, db = engine.backward(dout, W)
    assert dW.shape == W.shape and db.shape == (0,)
    np.testing.assert_array_equal(dx, np.zeros(x.shape))


# ------------------------------------------------------------------ state and attributes
def test_stride_and_pad_may_be_numpy_integers_and_are_read_at_every_forward():
    g = Window(2, 1, 7, 5, 3, 3, 2, 1)
    x, W, b, _ = conv_arrays(61, g, 2, np.float64)
    engine = ConvolutionEngine(np.int64(2), np.int32(1))
    assert_close(engine.forward(x, W, b), oracles.convolution(x, W, b, 2, 1))
    assert engine.geometry.stride == 2 and type(engine.geometry.stride) is int
    engine.stride, engine.pad = 1, np.uint8(0)
    assert_close(engine.forward(x, W, b), oracles.convolution(x, W, b, 1, 0))
    assert (engine.geometry.stride, engine.geometry.pad) == (1, 0)


def test_state_before_any_forward():
    engine = ConvolutionEngine()
    assert (engine.stride, engine.pad, engine.route) == (1, 0, None)
    assert engine.input is None and engine.geometry is None and engine.route_taken is None
    assert engine.columns() is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_input_is_kept_as_computed_on(dtype):
    x, W, b, _ = conv_arrays(63, Window(2, 2, 5, 5, 3, 3, 1, 1), 2, dtype)
    engine = ConvolutionEngine(1, 1)
    engine.forward(x, W, b)
    assert engine.input is x  # already C-contiguous of the computation's dtype: no copy
    engine.forward(np.asfortranarray(x), W, b)
    assert engine.input is not x and engine.input.flags.c_contiguous
    np.testing.assert_array_equal(engine.input, x)
    engine.forward(x.astype(np.int64), W, b)
    assert engine.input.dtype == np.result_type(np.int64, dtype)


def test_the_route_follows_the_setting_unless_the_engine_names_one():
    x, W, b, _ = conv_arrays(65, Window(2, 2, 5, 5, 3, 3, 1, 1), 2, np.float32)
    auto = "kernels" if nnkernels.conv_kernels_available() else "matmul"
    engine = ConvolutionEngine(1, 1)
    engine.forward(x, W, b)
    assert engine.route_taken == auto
    with nnkernels.config_context(conv_route="matmul"):
        engine.forward(x, W, b)
        assert engine.route_taken == "matmul"
        engine.route = "auto"
        engine.forward(x, W, b)
        assert engine.route_taken == auto
    for route in ROUTES:  # the engine's route wins over a setting that says otherwise
        engine.route = route
        with nnkernels.config_context(conv_route="matmul" if route == "kernels" else "auto"):
            engine.forward(x, W, b)
        assert engine.route_taken == route


def test_without_the_library_blas_auto_takes_the_matmul_route(without_library_blas):
    without_library_blas()
    g = Window(3, 2, 6, 5, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(67, g, 4, np.float32)
    engine = ConvolutionEngine(1, 1, route="auto")
    results = passes(engine, x, W, b, dout)
    assert engine.route_taken == "matmul"
    assert_matches_reference(results, x, W, b, dout, 1, 1, np.dtype(np.float32))


@pytest.mark.skipif(not nnkernels.conv_kernels_available(), reason="needs the fused kernels")
def test_the_fused_kernels_take_every_batch_and_small_work_one_thread():
    from nnkernels.engine.convolution import KERNELS, choose_route

    split = nnkernels.get_config()["split_min_macs"]
    threads = nnkernels.get_num_threads()
    assert choose_route("auto", 1, split) == (KERNELS, threads)  # one large image
    assert choose_route("auto", 100, split) == (KERNELS, threads)
    assert choose_route("auto", 100, split - 1) == (KERNELS, 1)  # the calling thread alone
    W = make_values(81, (8, 4, 3, 3), np.float32)
    engine = ConvolutionEngine(1, 1)
    engine.forward(make_values(82, (1, 4, 6, 6), np.float32), W, np.zeros(8, np.float32))
    assert engine.route_taken == "kernels"


# ------------------------------------------------------------------ results stay intact
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("n", [1, 4])
def test_results_are_never_written_again(route, n):
    g = Window(n, 3, 8, 7, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(83, g, 4, np.float32)
    engine = ConvolutionEngine(1, 1, route=route)
    first = passes(engine, x, W, b, dout)
    columns = engine.columns()
    snapshots = [a.copy() for a in (*first, columns)]
    x2, W2, b2, dout2 = conv_arrays(84, g, 4, np.float32)
    for _ in range(3):
        again = passes(engine, x2, W2, b2, dout2)
        assert_fresh(again, [*first, columns])
    for a, before in zip((*first, columns), snapshots):
        np.testing.assert_array_equal(a, before)


@settings(max_examples=25)
@given(case=conv_cases(), dtype=dtypes, layout=layouts, seed=seeds, route=routes)
def test_columns_are_the_reference_columns(case, dtype, layout, seed, route):
    g, fn = case
    x, W, b, _ = conv_arrays(seed, g, fn, dtype)
    engine = ConvolutionEngine(g.stride, g.pad, route=route)
    xin = in_layout(x, layout)
    engine.forward(xin, W, b)
    col = engine.columns()
    assert col.dtype == dtype and col.flags.c_contiguous
    slow = ref.Convolution(W.astype(np.float64), b.astype(np.float64), g.stride, g.pad)
    slow.forward(x.astype(np.float64))
    np.testing.assert_array_equal(col, slow.col)  # copies only: exact in both dtypes
    assert engine.columns() is col  # computed once per forward
    assert not np.shares_memory(col, xin) and not np.shares_memory(col, engine.input)
    engine.forward(xin, W, b)
    assert engine.columns() is not col


@pytest.mark.parametrize("route", ROUTES)
def test_a_pickled_engine_continues_with_the_same_bits(route):
    g = Window(4, 2, 6, 6, 3, 3, 1, 1)
    x, W, b, dout = conv_arrays(85, g, 3, np.float64)
    engine = ConvolutionEngine(1, 1, route=route)
    out = engine.forward(x, W, b)
    engine.columns()
    copy = pickle.loads(pickle.dumps(engine))
    assert copy.route_taken == route and copy.geometry == engine.geometry
    np.testing.assert_array_equal(copy.columns(), engine.columns())
    assert_same_bits((out, *copy.backward(dout, W)), (out, *engine.backward(dout, W)))


# ------------------------------------------------------------------ errors
X = make_values(91, (2, 3, 5, 5))
W3 = make_values(92, (4, 3, 3, 3))
B3 = np.zeros(4)


def test_backward_before_forward_raises():
    with pytest.raises(ValueError, match=r"backward\(\) called before forward\(\)"):
        ConvolutionEngine().backward(np.ones((2, 4, 3, 3)), W3)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "W_later",
    [W3.reshape(4, 3, 9, 1), W3.reshape(4, 27, 1, 1), W3[:3], np.ones((4, 3, 3, 3, 1))],
    ids=["reshaped", "flattened", "fewer-filters", "5-d"],
)
def test_filters_of_another_shape_at_backward_raise_naming_both_shapes(
    route, W_later, forbid_kernels
):
    engine = ConvolutionEngine(1, 1, route=route)
    out = engine.forward(X, W3, B3)
    forbid_kernels()
    message = re.escape(f"W has shape {W_later.shape} but had {W3.shape} at forward")
    with pytest.raises(ValueError, match=message):
        engine.backward(np.ones_like(out), W_later)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "dout_shape",
    [(2, 4, 5, 4), (2, 4, 25), (1, 4, 5, 5), (2, 3, 5, 5), (2, 4, 5, 5, 1)],
    ids=["narrower", "flat", "fewer-samples", "fewer-filters", "5-d"],
)
def test_dout_of_another_shape_raises_naming_both_shapes(route, dout_shape, forbid_kernels):
    engine = ConvolutionEngine(1, 1, route=route)
    engine.forward(X, W3, B3)
    forbid_kernels()
    want = "dout must have the shape of the last forward output (2, 4, 5, 5)"
    message = re.escape(f"{want}, got {dout_shape}")
    with pytest.raises(ValueError, match=message):
        engine.backward(np.ones(dout_shape), W3)


@pytest.mark.parametrize(
    "dout, W, exc, match",
    [
        (np.ones((2, 4, 5, 5), complex), W3, TypeError, "dout must be a real numeric array"),
        (np.full((2, 4, 5, 5), "a"), W3, TypeError, "dout must be a real numeric array"),
        (None, W3, TypeError, "dout must be a real numeric array"),
        (np.ones((2, 4, 5, 5)), W3.astype(complex), TypeError, "W must be a real numeric array"),
        (np.ones((2, 4, 5, 5)), "W", TypeError, "W must be a real numeric array"),
    ],
)
def test_backward_arguments_of_the_wrong_kind_raise(dout, W, exc, match, forbid_kernels):
    engine = ConvolutionEngine(1, 1)
    engine.forward(X, W3, B3)
    forbid_kernels()
    with pytest.raises(exc, match=match):
        engine.backward(dout, W)


@pytest.mark.parametrize(
    "name, value, exc, match",
    [
        ("stride", 0, ValueError, "stride must be >= 1, got 0"),
        ("stride", -1, ValueError, "stride must be >= 1, got -1"),
        ("stride", 1.5, TypeError, "stride must be an integer, got float 1.5"),
        ("stride", 2.0, TypeError, "stride must be an integer, got float 2.0"),
        ("stride", "2", TypeError, "stride must be an integer, got str '2'"),
        ("stride", None, TypeError, "stride must be an integer, got NoneType"),
        ("stride", True, TypeError, "stride must be an integer, got bool"),
        ("pad", -1, ValueError, "pad must be >= 0, got -1"),
        ("pad", 0.5, TypeError, "pad must be an integer, got float 0.5"),
        ("pad", "1", TypeError, "pad must be an integer, got str"),
        ("pad", np.array([1, 1]), TypeError, "pad must be an integer"),
    ],
)
def test_bad_stride_or_pad_raises_before_any_kernel(name, value, exc, match, forbid_kernels):
    forbid_kernels()
    with pytest.raises(exc, match=match):
        ConvolutionEngine(**{name: value}).forward(X, W3, B3)
    engine = ConvolutionEngine()  # set as an attribute: read, and refused, at forward
    setattr(engine, name, value)
    with pytest.raises(exc, match=match):
        engine.forward(X, W3, B3)


@pytest.mark.parametrize("route", ["fused", "", "Matmul", 1])
def test_an_unknown_route_raises_naming_the_choices(route):
    message = r"route must be one of 'auto', 'kernels', 'matmul' or None, got "
    with pytest.raises(ValueError, match=message + re.escape(repr(route))):
        ConvolutionEngine(route=route)
    engine = ConvolutionEngine()
    with pytest.raises(ValueError, match=message):
        engine.route = route
    assert engine.route is None


def test_the_kernels_route_without_the_library_blas_raises(without_library_blas):
    without_library_blas()
    with pytest.raises(RuntimeError, match="route 'kernels'.*scipy-openblas32 is not installed"):
        ConvolutionEngine(route="kernels").forward(X, W3, B3)


@pytest.mark.parametrize(
    "x, W, b, exc, match",
    [
        (X[0], W3, B3, ValueError, r"x must be 4-D \(N, C, H, W\), got shape \(3, 5, 5\)"),
        (X, W3[0], B3, ValueError, r"W must be 4-D \(FN, C, FH, FW\), got shape \(3, 3, 3\)"),
        (
            X[:, :2],
            W3,
            B3,
            ValueError,
            re.escape(
                "x has 2 channels (shape (2, 2, 5, 5)) but W expects 3 (W shape (4, 3, 3, 3))"
            ),
        ),
        (X, W3, np.zeros(3), ValueError, r"b must have 4 elements .* got shape \(3,\)"),
        (X, W3, np.zeros((2, 4)), ValueError, r"b must have 4 elements .* got shape \(2, 4\)"),
        (X, make_values(93, (4, 3, 6, 3)), B3, ValueError, "filter_h=6 is larger than the padded"),
        (X.astype(complex), W3, B3, TypeError, "x must be a real numeric array"),
        (X, W3.astype(object), B3, TypeError, "W must be a real numeric array"),
        (X, W3, "0", TypeError, "b must be a real numeric array"),
        (X, W3, None, TypeError, "b must be a real numeric array"),
        ([[1.0]], W3, B3, ValueError, "x must be 4-D"),
    ],
)
def test_bad_forward_arguments_raise_before_any_kernel(x, W, b, exc, match, forbid_kernels):
    forbid_kernels()
    with pytest.raises(exc, match=match):
        ConvolutionEngine(1, 0).forward(x, W, b)


def test_a_forward_that_raises_leaves_the_last_forward_in_place():
    engine = ConvolutionEngine(1, 1)
    out = engine.forward(X, W3, B3)
    kept = engine.input
    with pytest.raises(ValueError, match="channels"):
        engine.forward(X[:, :2], W3, B3)
    assert engine.input is kept
    dx, dW, db = engine.backward(np.ones_like(out), W3)
    _, dx_ref, dW_ref, db_ref = oracles.convolution(X, W3, B3, 1, 1, np.ones_like(out))
    assert_close(dx, dx_ref)
    assert_close(dW, dW_ref)
    assert_close(db, db_ref)
