"""Matrix products callable from inside kernels: NumPy's own OpenBLAS, by its symbols.

NumPy's PyPI wheels link an OpenBLAS built with 64-bit integers whose CBLAS functions are
exported as ``scipy_cblas_sgemm64_`` / ``scipy_cblas_dgemm64_`` (NumPy 2) or
``cblas_sgemm64_`` / ``cblas_dgemm64_`` (NumPy 1.26). Once that library is loaded into
LLVM's symbol table, a Numba kernel can call them like any C function, so a kernel can
build a sample's columns, multiply them and fold the result back without returning to
Python between the steps (strictly, the first OpenBLAS loaded in the process that exports
both names is used: with NumPy's wheels, NumPy's own).

Nothing is loaded at import: :func:`available` (also read as :data:`AVAILABLE`) loads the
library into LLVM the first time it is asked, which the convolution functions do before
their kernels compile. Where it fails (another BLAS, another build), nothing here may be
compiled and callers keep to NumPy's ``matmul``; :func:`probe` says why without loading.

OpenBLAS must be held at one thread while kernels call it from their own threads
(``nnkernels.threads.single_threaded_blas``).
"""

import threading

import numba
from numba import types
from numba.core.extending import intrinsic, overload

from .threads import _openblas_libraries

__all__ = ["available", "probe", "gemm", "ROW_MAJOR", "NO_TRANS", "TRANS"]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values
#: the CBLAS names of each NumPy wheel generation, newest first
_NAMINGS = (
    {"float32": "scipy_cblas_sgemm64_", "float64": "scipy_cblas_dgemm64_"},
    {"float32": "cblas_sgemm64_", "float64": "cblas_dgemm64_"},
)
_LOADED = {"lock": threading.Lock(), "result": None, "symbols": _NAMINGS[0]}


def probe():
    """``(usable, reason)``: whether a loaded OpenBLAS exports the products, and which
    library or why not. Loads nothing into LLVM."""
    if numba.config.DISABLE_JIT:
        return False, "NUMBA_DISABLE_JIT is set: kernels run as Python and cannot call C"
    try:
        import llvmlite.binding  # noqa: F401 - only its presence is checked
    except ImportError:
        return False, "llvmlite.binding cannot be imported"
    libraries = _openblas_libraries()
    if not libraries:
        return False, "NumPy's BLAS is not OpenBLAS (no OpenBLAS loaded in this process)"
    for path, library in libraries:
        for symbols in _NAMINGS:
            if all(hasattr(library, symbol) for symbol in symbols.values()):
                return True, f"{', '.join(symbols.values())} from {path}"
    wanted = " or ".join(", ".join(symbols.values()) for symbols in _NAMINGS)
    return False, (
        f"the loaded OpenBLAS ({', '.join(path for path, _ in libraries)}) exports none of {wanted}"
    )


def _load():
    import llvmlite.binding as llvm

    if not probe()[0]:
        return False
    for path, library in _openblas_libraries():
        for symbols in _NAMINGS:
            if not all(hasattr(library, symbol) for symbol in symbols.values()):
                continue
            try:
                llvm.load_library_permanently(path)
            except RuntimeError:
                break
            _LOADED["symbols"] = symbols
            return True
    return False


def available():
    """Whether kernels may call :func:`gemm` in this process; the first call loads NumPy's
    OpenBLAS into LLVM's symbol table (once)."""
    with _LOADED["lock"]:
        if _LOADED["result"] is None:
            _LOADED["result"] = _load()
        return _LOADED["result"]


def __getattr__(name):
    if name == "AVAILABLE":  # the module attribute, computed when first read
        return available()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _external_gemm(scalar):
    pointer = types.CPointer(scalar)
    return types.ExternalFunction(
        _LOADED["symbols"][scalar.name],
        types.void(
            types.int32,
            types.int32,
            types.int32,
            types.int64,
            types.int64,
            types.int64,
            scalar,
            pointer,
            types.int64,
            pointer,
            types.int64,
            scalar,
            pointer,
            types.int64,
        ),
    )


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
    elements apart. Callable only from kernels, and only when :func:`available`."""
    raise NotImplementedError("gemm is only callable from inside a Numba kernel")


@overload(gemm, jit_options={"nogil": True})
def _gemm_overload(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    if a.dtype not in (types.float32, types.float64) or not all(
        isinstance(arr, types.Array) and arr.dtype == a.dtype for arr in (a, b, c)
    ):
        return None
    available()  # the symbols must be in LLVM's table before this compiles
    external = _external_gemm(a.dtype)
    scalar = a.dtype

    def call(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        external(
            ROW_MAJOR,
            trans_a,
            trans_b,
            m,
            n,
            k,
            scalar(1.0),
            _first_element(a),
            lda,
            _first_element(b),
            ldb,
            scalar(0.0),
            _first_element(c),
            ldc,
        )

    return call
