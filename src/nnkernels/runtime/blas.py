"""The library's own BLAS: the OpenBLAS of the ``scipy-openblas32`` wheel, loaded privately.

Every matrix product of the library runs on it, called from the library's own threads:
compiled kernels call :func:`gemm`, which Numba binds to the library's CBLAS ``?gemm`` by a
name of the library's own in LLVM's symbol table (``nnkernels_cblas_sgemm`` and
``nnkernels_cblas_dgemm``, registered with ``llvmlite.binding.add_symbol``), so no other
code sees it.

The library file is found through the installed package's location and opened with
``ctypes.CDLL(path, RTLD_LOCAL)``; the package itself is never imported (importing it loads
the library into the process's global namespace). Its exported names carry a ``scipy_``
prefix and 32-bit integers, distinct from NumPy's OpenBLAS (whose names end in ``64_``).
It is loaded while the loading thread may use one core only, so it starts no thread pool,
and is set to one thread: each product runs on the thread that calls it, and the library
shares its work over its own threads.

NumPy's BLAS is never called, woken, held or reconfigured. Where the wheel is missing (a
platform without one) or does not load, :func:`available` is False with a reason
(:func:`describe`, ``nnkernels.show_config()``), and the library's products fall back to
NumPy's ``matmul``.
"""

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import sys

import numba
import numpy as np
from numba import types
from numba.core.extending import intrinsic, overload

from .process import STATE, watch_forks

__all__ = [
    "available",
    "require",
    "describe",
    "gemm",
    "ROW_MAJOR",
    "NO_TRANS",
    "TRANS",
    "MAX_DIMENSION",
]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values
#: the largest size or leading dimension a product may have (32-bit BLAS integers)
MAX_DIMENSION = 2**31 - 1
PACKAGE = "scipy_openblas32"
DISTRIBUTION = "scipy-openblas32"
_EXPORTED = {"float32": "scipy_cblas_sgemm", "float64": "scipy_cblas_dgemm"}
_SYMBOLS = {"float32": "nnkernels_cblas_sgemm", "float64": "nnkernels_cblas_dgemm"}


class _Handle:
    """The loaded library: its path, the addresses of its CBLAS ``?gemm`` functions and its
    configuration string."""

    def __init__(self, path, library):
        self.path = path
        self.library = library
        self.addresses = {
            dtype: ctypes.cast(getattr(library, name), ctypes.c_void_p).value
            for dtype, name in _EXPORTED.items()
        }
        get_config = library.scipy_openblas_get_config
        get_config.restype = ctypes.c_char_p
        self.config = get_config().decode(errors="replace").strip()
        set_threads = library.scipy_openblas_set_num_threads
        set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        set_threads(1)


def _library_path():
    """``(path, None)`` of the wheel's library file, or ``(None, reason)``."""
    try:
        spec = importlib.util.find_spec(PACKAGE)  # finds the package without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, (
            f"{DISTRIBUTION} is not installed (pip install {DISTRIBUTION}; it has wheels for "
            "Linux, macOS and Windows on x86-64 and ARM64)"
        )
    lib_dir = os.path.join(list(spec.submodule_search_locations)[0], "lib")
    suffix = {"win32": ".dll", "darwin": ".dylib"}.get(sys.platform, ".so")
    try:
        names = sorted(
            name
            for name in os.listdir(lib_dir)
            if name.startswith("libscipy_openblas") and name.endswith(suffix)
        )
    except OSError as exc:
        return None, f"{DISTRIBUTION}'s library folder {lib_dir} cannot be read ({exc})"
    if not names:
        return None, f"{DISTRIBUTION} has no libscipy_openblas*{suffix} in {lib_dir}"
    return os.path.join(lib_dir, names[0]), None


@contextlib.contextmanager
def _one_core_for_this_thread():
    """Within the block the calling thread may run on one core only (Linux), so that
    OpenBLAS, counting the cores it may use as it loads, starts no thread pool: the library
    calls it at one thread, and a pool's threads would only spin a while and sleep. The
    thread's own mask is restored afterwards; other threads are never touched."""
    try:
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(mask)})
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)


def _load():
    """The loaded :class:`_Handle`, or None and the reason."""
    if numba.config.DISABLE_JIT:
        reason = "NUMBA_DISABLE_JIT is set: kernels run as Python, products on NumPy's matmul"
        return None, reason
    path, reason = _library_path()
    if path is None:
        return None, reason
    try:
        import llvmlite.binding as llvm

        with _one_core_for_this_thread():
            library = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        handle = _Handle(path, library)
        for dtype, symbol in _SYMBOLS.items():
            llvm.add_symbol(symbol, handle.addresses[dtype])
    except (OSError, AttributeError, ImportError) as exc:
        return None, f"{path} did not load ({type(exc).__name__}: {exc})"
    return handle, None


def handle():
    """The library's BLAS (loaded at the first call, once per process), or None."""
    state = STATE.blas
    if not state.looked:
        with state.lock:
            if not state.looked:
                watch_forks()
                state.handle, reason = _load()
                state.reason = reason
                state.looked = True
    return state.handle


def available():
    """Whether the library computes on its own BLAS in this process; the first call loads it."""
    return handle() is not None


def require():
    """Load the library's BLAS, or raise ``RuntimeError`` saying why it is not available.

    Every caller of a kernel that calls :func:`gemm` calls this first: a kernel loaded from
    the cache links to the BLAS by name, which must be in LLVM's symbol table by then.
    """
    if handle() is None:
        raise RuntimeError(f"the library's BLAS is not available: {STATE.blas.reason}")


def _version():
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe():
    """What the library computes its products on, and why, as a ``dict``; loads nothing."""
    state = STATE.blas
    if state.handle is not None:
        return {
            "library": "OpenBLAS of scipy-openblas32, private to nnkernels, one thread per call",
            "version": _version(),
            "path": state.handle.path,
            "config": state.handle.config,
            "why": "every matrix product of the library runs on it; NumPy's BLAS is never used",
        }
    if state.looked:
        return {"library": "NumPy's matmul (fallback)", "why": state.reason}
    path, reason = _library_path()
    return {
        "library": "OpenBLAS of scipy-openblas32 (not loaded yet)" if path else "none found",
        "version": _version(),
        "path": path,
        "why": "loaded at the first matrix product" if path else reason,
    }


# ------------------------------------------------------------------ products
def gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """``c = op(a) @ op(b)`` for row-major ``c`` ``(m, n)``: CBLAS ``?gemm`` with alpha 1 and
    beta 0, on the library's BLAS.

    ``a``, ``b`` and ``c`` are C-contiguous arrays of one float dtype whose first element is
    the matrix's first element and whose rows are ``lda``/``ldb``/``ldc`` elements apart;
    ``trans_a``/``trans_b`` are :data:`NO_TRANS` or :data:`TRANS`; sizes fit 32 bits
    (:data:`MAX_DIMENSION`). Callable only from kernels, once :func:`available` returned
    True in the process (which puts the function in LLVM's symbol table).
    """
    raise NotImplementedError("gemm is only callable from inside a Numba kernel")


def _external_gemm(scalar):
    pointer = types.CPointer(scalar)
    return types.ExternalFunction(
        _SYMBOLS[scalar.name],
        types.void(
            *[types.int32] * 6,
            scalar,
            pointer,
            types.int32,
            pointer,
            types.int32,
            scalar,
            pointer,
            types.int32,
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


@overload(gemm, jit_options={"nogil": True})
def _gemm_overload(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    if a.dtype not in (types.float32, types.float64) or not all(
        isinstance(arr, types.Array) and arr.dtype == a.dtype for arr in (a, b, c)
    ):
        return None
    external = _external_gemm(a.dtype)
    scalar = a.dtype
    int32 = np.int32

    def call(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        external(
            int32(ROW_MAJOR),
            int32(trans_a),
            int32(trans_b),
            int32(m),
            int32(n),
            int32(k),
            scalar(1.0),
            _first_element(a),
            int32(lda),
            _first_element(b),
            int32(ldb),
            scalar(0.0),
            _first_element(c),
            int32(ldc),
        )

    return call
