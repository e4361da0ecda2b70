"""nnkernels im2col/col2im (book and per-sample layouts) against nnlayers.reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkernels
import nnlayers
import nnlayers.reference as ref
import oracles
from strategies import (
    Window,
    assert_close,
    bad_out_arrays,
    dtypes,
    in_layout,
    layouts,
    make_values,
    seeds,
    windows,
)


# ------------------------------------------------------------------ book layout
@settings(max_examples=50)
@given(g=windows(), dtype=dtypes, layout=layouts, seed=seeds)
def test_im2col_equals_reference_exactly(g, dtype, layout, seed):
    x = make_values(seed, g.x_shape, dtype)
    xin = in_layout(x, layout)
    saved = xin.copy()
    col = nnkernels.im2col(xin, g.fh, g.fw, g.stride, g.pad)
    expected = ref.im2col(x, g.fh, g.fw, g.stride, g.pad)
    assert col.dtype == dtype
    assert col.flags.c_contiguous
    oh, ow = g.out_hw
    assert col.shape == (g.n * oh * ow, g.c * g.fh * g.fw)
    np.testing.assert_array_equal(col, expected)  # copies only: exact in both dtypes
    np.testing.assert_array_equal(xin, saved)


@settings(max_examples=50)
@given(g=windows(), dtype=dtypes, layout=layouts, seed=seeds)
def test_col2im_matches_reference(g, dtype, layout, seed):
    oh, ow = g.out_hw
    col = make_values(seed, (g.n * oh * ow, g.c * g.fh * g.fw), dtype)
    cin = in_layout(col, layout)
    saved = cin.copy()
    img = nnkernels.col2im(cin, g.x_shape, g.fh, g.fw, g.stride, g.pad)
    expected = ref.col2im(col, g.x_shape, g.fh, g.fw, g.stride, g.pad)
    assert img.dtype == dtype
    assert img.shape == g.x_shape
    assert_close(img, expected, dtype)
    np.testing.assert_array_equal(cin, saved)


@given(g=windows(max_n=2), seed=seeds)
def test_nnlayers_util_wrappers_match_reference(g, seed):
    x = make_values(seed, g.x_shape)
    col = nnlayers.im2col(x, g.fh, g.fw, stride=g.stride, pad=g.pad)
    np.testing.assert_array_equal(col, ref.im2col(x, g.fh, g.fw, stride=g.stride, pad=g.pad))
    back = nnlayers.col2im(col, x.shape, g.fh, g.fw, stride=g.stride, pad=g.pad)
    assert_close(back, ref.col2im(col, x.shape, g.fh, g.fw, stride=g.stride, pad=g.pad))


def test_col2im_accepts_any_shape_with_the_right_size_like_the_reference():
    x = make_values(1, (2, 3, 5, 4))
    col = ref.im2col(x, 3, 2, 1, 1)
    flat = col.reshape(-1)
    assert_close(nnkernels.col2im(flat, x.shape, 3, 2, 1, 1), ref.col2im(flat, x.shape, 3, 2, 1, 1))


def test_im2col_known_values_with_padding():
    x = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)  # [[1 2 3] [4 5 6]]
    col = nnkernels.im2col(x, 2, 2, stride=2, pad=1)
    # out 2x2; windows start at (-1,-1), (-1,1), (1,-1), (1,1)
    expected = np.array(
        [
            [0, 0, 0, 1],
            [0, 0, 2, 3],
            [0, 4, 0, 0],
            [5, 6, 0, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(col, expected)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_input_become_float64(dtype):
    x = (make_values(2, (2, 2, 4, 5), style="ties") > 0).astype(dtype)
    col = nnkernels.im2col(x, 2, 3, 1, 1)
    assert col.dtype == np.float64
    np.testing.assert_array_equal(col, ref.im2col(x.astype(np.float64), 2, 3, 1, 1))
    cols = nnkernels.im2col_per_sample(x, 2, 3, 1, 1)
    assert cols.dtype == np.float64
    back = nnkernels.col2im(col.astype(dtype), x.shape, 2, 3, 1, 1)
    assert back.dtype == np.float64


def test_float16_input_computes_in_float32():
    x = make_values(3, (1, 2, 4, 4), np.float16)
    col = nnkernels.im2col(x, 2, 2)
    assert col.dtype == np.float32
    np.testing.assert_array_equal(col, ref.im2col(x, 2, 2))


def test_nan_and_inf_are_copied_like_the_reference():
    x = make_values(4, (2, 2, 5, 5))
    x[0, 1, 2, 3] = np.nan
    x[1, 0, 0, 0] = np.inf
    x[1, 1, 4, 4] = -np.inf
    col = nnkernels.im2col(x, 3, 3, 1, 1)
    np.testing.assert_array_equal(col, ref.im2col(x, 3, 3, 1, 1))
    img = nnkernels.col2im(col, x.shape, 3, 3, 1, 1)
    expected = ref.col2im(col, x.shape, 3, 3, 1, 1)
    np.testing.assert_array_equal(np.isnan(img), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(img), np.isposinf(expected))
    assert np.isnan(img).any() and np.isinf(img).any()
    finite = np.isfinite(expected)
    assert_close(img[finite], expected[finite])


@pytest.mark.parametrize(
    "shape, window",
    [
        ((7, 23, 6, 5), (3, 3, 1, 1)),  # items of 2 channels and one of 1
        ((100, 3, 5, 5), (2, 2, 2, 0)),  # items of whole samples
        ((1, 9, 8, 8), (3, 2, 2, 1)),  # items of one channel
    ],
)
def test_col2im_in_channel_blocks_matches_reference_and_thread_counts(shape, window):
    from nnkernels.runtime.jit import forced_parallel

    fh, fw, stride, pad = window
    x = make_values(5, shape)
    col = make_values(6, ref.im2col(x, fh, fw, stride, pad).shape)
    expected = ref.col2im(col, shape, fh, fw, stride, pad)
    results = []
    with forced_parallel():
        for threads in (1, 2):
            with nnkernels.config_context(threads=threads):
                results.append(nnkernels.col2im(col, shape, fh, fw, stride, pad))
    assert_close(results[0], expected)
    np.testing.assert_array_equal(results[1], results[0])


def test_empty_batch():
    x = np.zeros((0, 2, 4, 4))
    assert nnkernels.im2col(x, 2, 2).shape == (0, 8)
    assert nnkernels.im2col_per_sample(x, 2, 2).shape == (0, 8, 9)
    assert nnkernels.col2im(np.zeros((0, 8)), x.shape, 2, 2).shape == x.shape
    assert nnkernels.col2im_per_sample(np.zeros((0, 8, 9)), x.shape, 2, 2).shape == x.shape


# ------------------------------------------------------------------ per-sample layout
@settings(max_examples=50)
@given(g=windows(), dtype=dtypes, layout=layouts, seed=seeds)
def test_im2col_per_sample_is_the_reference_layout_transposed(g, dtype, layout, seed):
    x = make_values(seed, g.x_shape, dtype)
    xin = in_layout(x, layout)
    saved = xin.copy()
    cols = nnkernels.im2col_per_sample(xin, g.fh, g.fw, g.stride, g.pad)
    oh, ow = g.out_hw
    assert cols.shape == (g.n, g.c * g.fh * g.fw, oh * ow)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    expected = oracles.im2col_per_sample(x, g.fh, g.fw, g.stride, g.pad)
    np.testing.assert_array_equal(cols, expected)
    np.testing.assert_array_equal(xin, saved)


@st.composite
def same_width_windows(draw):
    """Stride 1 and ``filter_w == 2*pad + 1`` (output as wide as the input): the geometry
    the column kernel copies a whole tap at a time; any height, tall or short filters."""
    pad = draw(st.integers(0, 3))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    fh = draw(st.integers(1, h + 2 * pad))
    return Window(n, c, h, w, fh, 2 * pad + 1, 1, pad)


@settings(max_examples=60)
@given(g=same_width_windows(), dtype=dtypes, seed=seeds)
def test_im2col_per_sample_same_width_fills_every_cell(g, dtype, seed):
    x = make_values(seed, g.x_shape, dtype)
    oh, ow = g.out_hw
    assert ow == g.w
    out = np.full((g.n, g.c * g.fh * g.fw, oh * ow), np.nan, dtype=dtype)  # no cell left unset
    cols = nnkernels.im2col_per_sample(x, g.fh, g.fw, g.stride, g.pad, out=out)
    expected = oracles.im2col_per_sample(x, g.fh, g.fw, g.stride, g.pad)
    np.testing.assert_array_equal(cols, expected)


@settings(max_examples=50)
@given(g=windows(), dtype=dtypes, layout=layouts, seed=seeds)
def test_col2im_per_sample_is_the_adjoint(g, dtype, layout, seed):
    x = make_values(seed, g.x_shape, np.float64)
    oh, ow = g.out_hw
    c = make_values(seed + 1, (g.n, g.c * g.fh * g.fw, oh * ow), np.float64)
    cin = in_layout(c.astype(dtype), layout)
    saved = cin.copy()
    folded = nnkernels.col2im_per_sample(cin, g.x_shape, g.fh, g.fw, g.stride, g.pad)
    assert folded.dtype == dtype and folded.shape == g.x_shape
    np.testing.assert_array_equal(cin, saved)
    # <im2col(x), c> == <x, col2im(c)>
    lhs = np.vdot(nnkernels.im2col_per_sample(x, g.fh, g.fw, g.stride, g.pad), c.astype(dtype))
    rhs = np.vdot(x, folded.astype(np.float64))
    scale = np.sum(np.abs(x)) * np.max(np.abs(c)) * g.fh * g.fw + 1.0
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(lhs - rhs) <= tol * scale
    # and it agrees with the reference col2im on the same columns in the book's layout
    expected = oracles.col2im_per_sample(c.astype(dtype), g.x_shape, g.fh, g.fw, g.stride, g.pad)
    assert_close(folded, expected, dtype)


# ------------------------------------------------------------------ out=
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_per_sample_out_is_filled_and_returned(dtype):
    x = make_values(5, (3, 2, 6, 5), dtype)
    out = np.full((3, 2 * 3 * 2, 4 * 4), np.nan, dtype=dtype)  # padding cells must be zeroed
    result = nnkernels.im2col_per_sample(x, 3, 2, 2, 2, out=out)
    assert result is out
    np.testing.assert_array_equal(out, nnkernels.im2col_per_sample(x, 3, 2, 2, 2))
    assert not np.isnan(out).any()


def test_im2col_per_sample_out_can_be_a_leading_slice_of_a_workspace():
    x = make_values(6, (4, 1, 5, 5))
    work = np.full((6, 9, 9), 7.0)
    result = nnkernels.im2col_per_sample(x[:2], 3, 3, 1, 0, out=work[:2])
    np.testing.assert_array_equal(result, nnkernels.im2col_per_sample(x[:2], 3, 3))
    np.testing.assert_array_equal(work[2:], 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col2im_per_sample_out_is_overwritten_not_accumulated(dtype):
    shape = (2, 3, 5, 4)
    cols = make_values(7, (2, 3 * 2 * 2, 4 * 3), dtype)
    out = np.full(shape, 100.0, dtype=dtype)
    result = nnkernels.col2im_per_sample(cols, shape, 2, 2, 1, 0, out=out)
    assert result is out
    np.testing.assert_array_equal(out, nnkernels.col2im_per_sample(cols, shape, 2, 2, 1, 0))


@pytest.mark.parametrize("out", bad_out_arrays((2, 2 * 2 * 3, 3 * 2), np.float64))
def test_im2col_per_sample_bad_out_raises(out, forbid_kernels):
    x = make_values(8, (2, 2, 4, 4))
    forbid_kernels()
    with pytest.raises(ValueError, match="out"):
        nnkernels.im2col_per_sample(x, 2, 3, 1, 0, out=out)


@pytest.mark.parametrize("out", bad_out_arrays((2, 2, 4, 4), np.float64))
def test_col2im_per_sample_bad_out_raises(out, forbid_kernels):
    cols = make_values(9, (2, 2 * 2 * 3, 3 * 2))
    forbid_kernels()
    with pytest.raises(ValueError, match="out"):
        nnkernels.col2im_per_sample(cols, (2, 2, 4, 4), 2, 3, 1, 0, out=out)


# ------------------------------------------------------------------ output size
@given(
    size=st.integers(1, 30),
    window=st.integers(1, 8),
    stride=st.integers(1, 4),
    pad=st.integers(0, 3),
)
def test_conv_output_size_is_the_integer_formula(size, window, stride, pad):
    if window > size + 2 * pad:
        with pytest.raises(ValueError, match="larger than the padded"):
            nnlayers.conv_output_size(size, window, stride, pad)
        return
    got = nnlayers.conv_output_size(size, window, stride, pad)
    assert type(got) is int
    assert got == (size + 2 * pad - window) // stride + 1
    assert got == int(ref.conv_output_size(size, window, stride, pad))
    assert nnkernels.conv_output_shape((1, 1, size, size + 1), window, 1, stride, pad) == (
        got,
        (size + 1 + 2 * pad - 1) // stride + 1,
    )


def test_out_sharing_memory_with_the_input_raises(forbid_kernels):
    """An ``out`` overlapping the input would be read while written: refused, input intact."""
    store = make_values(10, (2 * 2 * 4 * 4 + 2 * 2 * 2 * 3 * 3 * 2,))
    x = store[: 2 * 2 * 4 * 4].reshape(2, 2, 4, 4)
    before = x.copy()
    cols_in_x = store[: 2 * 2 * 2 * 3 * 3 * 2].reshape(2, 2 * 2 * 3, 3 * 2)
    forbid_kernels()
    with pytest.raises(ValueError, match="out must not share memory"):
        nnkernels.im2col_per_sample(x, 2, 3, 1, 0, out=cols_in_x)
    cols = make_values(11, (2, 2 * 2 * 3, 3 * 2))
    with pytest.raises(ValueError, match="out must not share memory"):
        nnkernels.col2im_per_sample(
            cols, (2, 2, 4, 4), 2, 3, 1, 0, out=cols.reshape(-1)[:64].reshape(2, 2, 4, 4)
        )
    np.testing.assert_array_equal(x, before)
