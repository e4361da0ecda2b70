"""Matrix products callable from inside kernels: NumPy's own OpenBLAS, by its symbols.

NumPy's PyPI wheels link an OpenBLAS built with 64-bit integers whose CBLAS functions are
exported as ``scipy_cblas_sgemm64_`` / ``scipy_cblas_dgemm64_``. Once that library is loaded
into LLVM's symbol table, a Numba kernel can call them like any C function, so a kernel can
build a sample's columns, multiply them and fold the result back without returning to
Python between the steps (strictly, the first OpenBLAS loaded in the process that exports
both names is used: with NumPy's wheels, NumPy's own). :data:`AVAILABLE` says whether this
worked in this process; where
it did not (another BLAS, another build), nothing here may be compiled and callers keep to
NumPy's ``matmul``.

OpenBLAS must be held at one thread while kernels call it from their own threads
(``nnkernels.threads.single_threaded_blas``).
"""

import numba
from numba import types
from numba.core.extending import intrinsic, overload

from .threads import _openblas_libraries

__all__ = ["AVAILABLE", "gemm", "ROW_MAJOR", "NO_TRANS", "TRANS"]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values
_SYMBOLS = {"float32": "scipy_cblas_sgemm64_", "float64": "scipy_cblas_dgemm64_"}


def _load():
    """Load the OpenBLAS that exports both symbols into LLVM's symbol table; True if done
    (never under ``NUMBA_DISABLE_JIT``, where kernels run as Python and cannot call it)."""
    if numba.config.DISABLE_JIT:
        return False
    try:
        import llvmlite.binding as llvm
    except ImportError:
        return False
    for path, library in _openblas_libraries():
        if all(hasattr(library, symbol) for symbol in _SYMBOLS.values()):
            try:
                llvm.load_library_permanently(path)
            except RuntimeError:
                continue
            return True
    return False


#: whether kernels may call :func:`gemm` in this process
AVAILABLE = _load()


def _external_gemm(scalar):
    pointer = types.CPointer(scalar)
    return types.ExternalFunction(_SYMBOLS[scalar.name], types.void(
        types.int32, types.int32, types.int32, types.int64, types.int64, types.int64,
        scalar, pointer, types.int64, pointer, types.int64, scalar, pointer, types.int64))


_SGEMM = _external_gemm(types.float32)
_DGEMM = _external_gemm(types.float64)


@intrinsic
def _first_element(typingctx, array):
    """Pointer to a C-contiguous array's first element."""
    if not isinstance(array, types.Array) or array.layout != "C":
        return None

    def codegen(context, builder, signature, args):
        return context.make_array(array)(context, builder, args[0]).data
    return types.CPointer(array.dtype)(array), codegen


def gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """``c = op(a) @ op(b)`` for row-major ``c`` ``(m, n)``: CBLAS ``?gemm`` with alpha 1 and
    beta 0, on C-contiguous arrays of one float dtype whose rows are ``lda``/``ldb``/``ldc``
    elements apart. Callable only from kernels, and only when :data:`AVAILABLE`."""
    raise NotImplementedError("gemm is only callable from inside a Numba kernel")


@overload(gemm, jit_options={"nogil": True})
def _gemm_overload(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    external = {types.float32: _SGEMM, types.float64: _DGEMM}.get(a.dtype)
    if external is None or not all(isinstance(arr, types.Array) and arr.dtype == a.dtype
                                   for arr in (a, b, c)):
        return None
    scalar = a.dtype

    def call(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        external(ROW_MAJOR, trans_a, trans_b, m, n, k, scalar(1.0), _first_element(a), lda,
                 _first_element(b), ldb, scalar(0.0), _first_element(c), ldc)
    return call
