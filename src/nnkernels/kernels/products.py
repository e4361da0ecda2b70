"""Matrix products on the library's own BLAS, shared over the library's threads.

A batch of products (one per sample) is cut into tiles of one matrix each; a single
product into blocks of rows or columns by its shape (:func:`pieces`). One GIL-free kernel
runs a range of tiles, calling the library's single-threaded CBLAS ``?gemm`` for each
(:mod:`nnkernels.runtime.blas`); the ranges run side by side on the library's threads
(:func:`nnkernels.runtime.helpers.run_parts`). The tiles never depend on the thread count,
so neither do the results.

Where the library's BLAS is not available (:func:`nnkernels.runtime.blas.available`), the
products run on NumPy's ``matmul`` in the calling thread.
"""

import numpy as np

from ..registry import example, examples
from ..runtime import blas
from ..runtime.blas import MAX_DIMENSION, NO_TRANS, TRANS, gemm
from ..runtime.helpers import run_parts
from ..runtime.jit import threaded_kernel
from ..runtime.partition import get_num_threads
from ..validation import (
    as_float_array,
    check_int,
    check_ndim,
    checked_out,
    compute_dtype,
    real_array,
)
from . import _examples

__all__ = ["matmul", "product", "Operand", "operand", "multiply", "pieces"]


@threaded_kernel(also_reads=(blas,))
def _tiles_kernel(trans_a, trans_b, k, a, lda, b, ldb, c, ldc, tiles, lo, hi):
    """For each tile ``t`` in ``[lo, hi)``: the ``(m, n)`` block of ``c`` at flat offset
    ``tiles[t, 4]`` is ``op(a) @ op(b)`` with the operands' first elements at flat offsets
    ``tiles[t, 2]`` and ``tiles[t, 3]``; ``tiles[t, :2]`` is ``(m, n)``. ``a``, ``b``, ``c``
    are flat C-contiguous arrays of one dtype."""
    for t in range(lo, hi):
        gemm(
            trans_a,
            trans_b,
            tiles[t, 0],
            tiles[t, 1],
            k,
            a[tiles[t, 2] :],
            lda,
            b[tiles[t, 3] :],
            ldb,
            c[tiles[t, 4] :],
            ldc,
        )


class Operand:
    """A matrix, or a batch of matrices of one shape, as the library's BLAS reads it.

    Attributes
    ----------
    array : ndarray
        The 2-D ``(rows, cols)`` or 3-D ``(batch, rows, cols)`` array.
    flat : ndarray, 1-D
        A flat C-contiguous view from the first element of ``array`` to its last.
    trans : int
        ``NO_TRANS`` when each matrix is stored row by row, ``TRANS`` column by column.
    ld : int
        Elements between the starts of two stored rows (of the stored, possibly transposed,
        matrix).
    step : int
        Elements between the starts of two matrices of the batch (0 for a 2-D array, which
        serves every matrix of a batched product).
    """

    __slots__ = ("array", "flat", "trans", "ld", "step")

    def __init__(self, array, flat, trans, ld, step):
        self.array, self.flat, self.trans, self.ld, self.step = array, flat, trans, ld, step

    @property
    def rows(self):
        return self.array.shape[-2]

    @property
    def cols(self):
        return self.array.shape[-1]


def _order(rows, cols, row_stride, col_stride, item):
    """``(trans, ld)`` reading a ``(rows, cols)`` matrix with these byte strides, or None."""
    if (cols <= 1 or col_stride == item) and (rows <= 1 or row_stride == cols * item):
        return NO_TRANS, max(cols, 1)
    if (rows <= 1 or row_stride == item) and (cols <= 1 or col_stride == rows * item):
        return TRANS, max(rows, 1)
    return None


def operand(array):
    """``array`` (2-D or 3-D, float32 or float64) as an :class:`Operand`; a C-ordered copy
    of it when its matrices are ordered neither by rows nor by columns, or overlap."""
    if array.size == 0:
        array = np.zeros(array.shape, array.dtype)  # NumPy gives empty arrays any strides
    found = _reading(array)
    if found is None:
        found = _reading(np.ascontiguousarray(array))
    return found


def _reading(array):
    """The :class:`Operand` reading ``array`` in place, or None when BLAS cannot."""
    item = array.itemsize
    rows, cols = array.shape[-2:]
    batch = array.shape[0] if array.ndim == 3 else 1
    order = _order(rows, cols, *array.strides[-2:], item)
    step = array.strides[0] // item if batch > 1 else 0
    if order is None or (batch > 1 and (array.strides[0] % item or step < rows * cols)):
        return None  # transposed by neither order, or overlapping or reversed matrices
    span = (batch - 1) * step + rows * cols
    flat = np.lib.stride_tricks.as_strided(array, shape=(span,), strides=(item,))
    return Operand(array, flat, *order, step)


#: multiply-adds a tile of a single product holds at least, and the most tiles it is cut
#: into (see :func:`pieces`)
TILE_MIN_MACS = 1 << 22
MAX_PIECES = 4


def pieces(m, n, k):
    """Tiles a single ``(m, k) @ (k, n)`` product is cut into: one per ``TILE_MIN_MACS``
    multiply-adds, at most ``MAX_PIECES``. The cut depends on the shape only, never on a
    thread count (of the call, or the process's maximum): OpenBLAS's sums for a block of
    rows need not be the bits of the same rows in the whole product, so a fixed cut keeps
    results the same in every process and thread setting."""
    along = m if m >= n else n
    return max(1, min(MAX_PIECES, (m * n * k) // TILE_MIN_MACS, along))


def _tiles(a, b, c, batch, m, n, k):
    """``(T, 5)`` int64 tiles: each matrix of a batch whole, or a single product cut into
    :func:`pieces` blocks of rows (or of columns, when it has fewer rows than columns)."""
    if batch > 1:
        starts = np.arange(batch, dtype=np.int64)
        return np.stack(
            [
                np.full(batch, m),
                np.full(batch, n),
                starts * a.step,
                starts * b.step,
                starts * c.step,
            ],
            axis=1,
        ).astype(np.int64)
    count = pieces(m, n, k)
    by_rows = m >= n
    along = m if by_rows else n
    tiles = np.empty((count, 5), dtype=np.int64)
    for t in range(count):
        lo, hi = along * t // count, along * (t + 1) // count
        if by_rows:
            tiles[t] = (hi - lo, n, lo * (a.ld if a.trans == NO_TRANS else 1), 0, lo * c.ld)
        else:
            tiles[t] = (m, hi - lo, 0, lo * (1 if b.trans == NO_TRANS else b.ld), lo)
    return tiles


def multiply(a, b, c, threads=1):
    """Fill ``c`` with ``a @ b`` (the products of each matrix of a batch) on the library's
    BLAS, over ``threads`` threads; arguments are :class:`Operand` (``c`` row-ordered)."""
    blas.require()
    batch = max(x.array.shape[0] if x.array.ndim == 3 else 1 for x in (a, b, c))
    m, k, n = a.rows, a.cols, b.cols
    if c.array.size == 0:
        return
    if k == 0:
        c.array[...] = 0
        return
    tiles = _tiles(a, b, c, batch, m, n, k)
    parts = min(threads, len(tiles))
    args = (a.trans, b.trans, k, a.flat, a.ld, b.flat, b.ld, c.flat, c.ld, tiles)
    if parts <= 1:
        _tiles_kernel(*args, 0, len(tiles))
        return
    bounds = [(len(tiles) * i // parts, len(tiles) * (i + 1) // parts) for i in range(parts)]
    run_parts(bounds, lambda part, lo, hi, stop: _tiles_kernel(*args, lo, hi))


def _fits_32_bits(*arrays):
    return all(max(array.shape, default=0) <= MAX_DIMENSION for array in arrays)


@examples(
    lambda dtype: (
        [
            example(_examples.rand((7, 5), dtype), _examples.rand((5, 6), dtype, 1)),
            example(_examples.rand((3, 4, 5), dtype), _examples.rand((5, 6), dtype, 1).T.copy().T),
        ]
        if blas.available()
        else []
    ),
    group="products",
)
def matmul(a, b, out=None, *, threads=None):
    """``a @ b`` on the library's own BLAS, shared over its threads.

    ``a`` is ``(m, k)`` or ``(batch, m, k)``, ``b`` is ``(k, n)`` or ``(batch, k, n)`` (a 2-D
    operand serves every matrix of the batch). Returns a C-contiguous ``(m, n)`` or
    ``(batch, m, n)`` array of NumPy's promoted float dtype of the two (float32 or float64),
    or fills ``out`` (writeable, C-contiguous, of that shape and dtype, sharing no memory
    with ``a`` or ``b``). Transposed views are read in place. ``threads``: threads to share
    the product over (default: ``get_num_threads()``); the result does not depend on it.
    Where the library's BLAS is not available, NumPy's ``matmul`` computes it.
    """
    dtype = compute_dtype(a, b, names=("a", "b"))
    a = _as_matrices(a, "a", dtype)
    b = _as_matrices(b, "b", dtype)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"a has {a.shape[-1]} columns (shape {a.shape}) but b has {b.shape[-2]} rows "
            f"(shape {b.shape})"
        )
    batch = [x.shape[0] for x in (a, b) if x.ndim == 3]
    if len(batch) == 2 and batch[0] != batch[1]:
        raise ValueError(f"a and b must have one batch size, got {a.shape} and {b.shape}")
    shape = (*batch[:1], a.shape[-2], b.shape[-1])
    result = checked_out(out, shape, dtype, inputs=(a, b))
    threads = get_num_threads() if threads is None else check_int(threads, "threads", minimum=1)
    product(a, b, result, threads)
    return result


def product(a, b, out, threads=1):
    """``out[...] = a @ b`` for validated float arrays of one dtype (2-D or 3-D, ``out``
    C-contiguous): on the library's BLAS over ``threads`` threads, or NumPy's ``matmul``."""
    if blas.available() and _fits_32_bits(a, b, out):
        multiply(operand(a), operand(b), operand(out), threads)
    else:
        np.matmul(a, b, out=out)


def _as_matrices(x, name, dtype):
    x = real_array(x, name)
    if x.dtype != dtype:
        x = as_float_array(x, name, dtype=dtype)
    check_ndim(x, name, (2, 3))
    return x
