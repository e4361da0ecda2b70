"""``nnkernels.matmul``: products on the library's own BLAS against NumPy's, over drawn
shapes, both dtypes, every memory layout, batches and broadcasts; results independent of
the thread count; clear errors."""

import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnkernels
import oracles
from _subprocess_helpers import child_env
from nnkernels.kernels import products
from strategies import DTYPES, LAYOUTS, assert_close, in_layout

sizes = st.integers(0, 40)


@given(
    m=sizes,
    k=sizes,
    n=sizes,
    batch=st.sampled_from([None, 1, 3]),
    broadcast=st.sampled_from(["none", "a", "b"]),
    dtype=st.sampled_from(DTYPES),
    layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
    seed=st.integers(0, 2**16),
)
def test_matches_numpy(m, k, n, batch, broadcast, dtype, layouts, seed):
    rng = np.random.default_rng(seed)
    lead_a = () if batch is None or broadcast == "a" else (batch,)
    lead_b = () if batch is None or broadcast == "b" else (batch,)
    a = rng.standard_normal((*lead_a, m, k)).astype(dtype)
    b = rng.standard_normal((*lead_b, k, n)).astype(dtype)
    before = a.copy(), b.copy()
    a_in, b_in = in_layout(a, layouts[0]), in_layout(b, layouts[1])
    result = nnkernels.matmul(a_in, b_in)
    expected = oracles.matmul(a, b)
    assert result.dtype == dtype and result.flags.c_contiguous
    assert_close(result, expected, dtype, scale=max(1.0, float(np.sqrt(k))))
    np.testing.assert_array_equal(a_in, before[0])  # inputs untouched
    np.testing.assert_array_equal(b_in, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    [(100, 4320, 100), (100, 100, 4320), (4320, 100, 100), (7, 3, 5), (1, 2000, 1)],
)
def test_results_do_not_depend_on_the_thread_count(shape, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    one = nnkernels.matmul(a, b, threads=1)
    for threads in range(2, numba.config.NUMBA_NUM_THREADS + 2):
        np.testing.assert_array_equal(nnkernels.matmul(a, b, threads=threads), one)
    np.testing.assert_array_equal(nnkernels.matmul(a.T.copy().T, b), one)  # read transposed


def test_a_large_product_is_cut_by_its_shape_only():
    assert products.pieces(100, 100, 4320) == min(products.MAX_PIECES, 100 * 100 * 4320 >> 22)
    assert products.pieces(100, 100, 1 << 20) == products.MAX_PIECES
    assert products.pieces(7, 3, 5) == 1
    assert products.pieces(1, 1, 1 << 30) == 1  # never more blocks than rows or columns


PIECES_IN_A_PROCESS = """
    import sys
    import numpy as np
    import nnkernels
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((100, 4320)), rng.standard_normal((4320, 100))
    sys.stdout.buffer.write(nnkernels.matmul(a.astype(np.float32), b.astype(np.float32)).tobytes())
"""


def test_results_do_not_depend_on_the_process_thread_maximum():
    """A Dask worker runs with NUMBA_NUM_THREADS=1; its products must give the bits of a
    process with every core."""
    outputs = []
    for threads in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(PIECES_IN_A_PROCESS)],
            env=child_env({"NUMBA_NUM_THREADS": threads}),
            capture_output=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]


def test_dtypes_follow_numpy_promotion():
    a32, a64 = np.ones((3, 4), np.float32), np.ones((3, 4))
    b32 = np.ones((4, 2), np.float32)
    assert nnkernels.matmul(a32, b32).dtype == np.float32
    assert nnkernels.matmul(a64, b32).dtype == np.float64
    assert nnkernels.matmul(np.ones((3, 4), np.int64), b32).dtype == np.float64
    np.testing.assert_array_equal(nnkernels.matmul([[1, 2]], [[3], [4]]), [[11.0]])


def test_out_is_filled_and_returned():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    out = np.empty((3, 2), np.float32)
    assert nnkernels.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, 4.0)


@pytest.mark.parametrize(
    "a, b, kwargs, error, message",
    [
        (np.ones((3, 4)), np.ones((5, 2)), {}, ValueError, "a has 4 columns .* b has 5 rows"),
        (np.ones(4), np.ones((4, 2)), {}, ValueError, "a must be 2-D or 3-D"),
        (np.ones((2, 3, 4)), np.ones((3, 4, 2)), {}, ValueError, "one batch size"),
        (np.ones((3, 4), complex), np.ones((4, 2)), {}, TypeError, "a must be a real numeric"),
        (np.ones((3, 4)), np.ones((4, 2)), {"out": np.ones((3, 2), np.float32)}, ValueError, "out"),
        (np.ones((3, 4)), np.ones((4, 2)), {"threads": 0}, ValueError, "threads"),
    ],
)
def test_bad_arguments_raise_before_any_kernel(a, b, kwargs, error, message, forbid_kernels):
    forbid_kernels()
    with pytest.raises(error, match=message):
        nnkernels.matmul(a, b, **kwargs)


def test_out_sharing_memory_with_an_input_is_refused():
    a = np.ones((4, 4))
    with pytest.raises(ValueError, match="must not share memory"):
        nnkernels.matmul(a, np.ones((4, 4)), out=a)
