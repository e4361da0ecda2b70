"""Argument checks shared by every public wrapper.

Kernels assume valid input; everything a caller can get wrong is caught here, before any
kernel runs, with a ``ValueError`` or ``TypeError`` naming the argument, what was expected
and what was given.
"""

import numbers
import operator

import numpy as np

__all__ = [
    "real_array",
    "as_float_array",
    "compute_dtype",
    "check_int",
    "check_ndim",
    "check_shape",
    "window_output_size",
    "empty_result",
    "check_input_shape",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: the largest integer argument (a size, stride, pad or count) any function accepts: sizes
#: beyond it cannot describe an array that fits in memory, and kernels index in 64 bits
MAX_INT = 2**31 - 1


def real_array(x, name):
    """``x`` as a plain ``numpy.ndarray`` of a real numeric dtype (no copy when it is one).

    Subclasses (``numpy.matrix``, ``memmap``) become plain arrays; masked arrays are refused,
    since computing on their data would silently drop the mask. Raises ``TypeError`` naming
    ``name`` for anything that is not real numeric.
    """
    if type(x) is not np.ndarray:
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                f"{name} must be a plain array, got a masked array; fill the masked values "
                f"first ({name}.filled(...))"
            )
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a real numeric array, got {_describe(x)}") from exc
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    return x


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


def compute_dtype(*arrays, names=()):
    """The float dtype a kernel computes in for these inputs.

    NumPy's promotion of the inputs (Python scalars are weak), then: float32 and float64
    stay; bool/integer promote to float64 (as NumPy does in arithmetic with floats);
    float16 computes in float32. Complex, object, string and other dtypes raise TypeError,
    naming the offending input by ``names[i]`` when given.
    """
    first = arrays[0] if arrays else None
    if isinstance(first, np.ndarray) and first.dtype in _FLOAT_DTYPES:
        # fast path (the common case, and the one small layers pay for per call)
        dtype = first.dtype
        if all(isinstance(a, np.ndarray) and a.dtype == dtype for a in arrays[1:]):
            return dtype
    dtypes = []
    for i, a in enumerate(arrays):
        if a is None:
            continue
        if isinstance(a, (int, float, bool)):
            dtypes.append(a)
            continue
        try:
            dtype = a.dtype if isinstance(a, np.ndarray) else np.asarray(a).dtype
        except (TypeError, ValueError):
            dtype = np.dtype(object)
        if dtype.kind not in "biuf":
            name = names[i] if i < len(names) else f"input {i}"
            raise TypeError(
                f"{name} must be a real numeric array (float32 or float64), got dtype {dtype}"
            )
        dtypes.append(dtype)
    dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype in _FLOAT_DTYPES:
        return dtype
    raise TypeError(f"expected real numeric input (float32 or float64), got dtype {dtype}")


def as_float_array(x, name, dtype=None, ndim=None):
    """Return ``x`` as a C-contiguous float32/float64 ndarray without modifying ``x``.

    ``dtype`` forces the result dtype (it must be float32 or float64); otherwise bool and
    integer input becomes float64, float16 becomes float32. ``ndim`` (an int or a tuple of
    allowed ints) is checked and named in the error.
    """
    if type(x) is np.ndarray:
        arr = x
        if (
            arr.flags.c_contiguous
            and (arr.dtype == dtype if dtype is not None else arr.dtype in _FLOAT_DTYPES)
            and (
                ndim is None or arr.ndim == ndim or (not isinstance(ndim, int) and arr.ndim in ndim)
            )
        ):
            return arr
    else:
        arr = real_array(x, name)
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{name} must be a real numeric array (float32 or float64), got dtype {arr.dtype}"
        )
    if ndim is not None:
        check_ndim(arr, name, ndim)
    target = np.dtype(dtype) if dtype is not None else compute_dtype(arr)
    if target not in _FLOAT_DTYPES:
        raise TypeError(f"internal: unsupported compute dtype {target}")
    return np.asarray(arr, dtype=target, order="C")


def check_ndim(arr, name, ndim):
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {want}, got {arr.ndim}-D array of shape {arr.shape}")


def check_shape(arr, name, shape):
    """Check ``arr.shape == shape`` (``None`` entries match anything)."""
    shape = tuple(shape)
    ok = len(arr.shape) == len(shape) and all(
        want is None or want == got for want, got in zip(shape, arr.shape)
    )
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(arr.shape)}")


def check_int(value, name, minimum=None, maximum=MAX_INT):
    """Return ``value`` as a Python int between ``minimum`` (if given) and ``maximum``;
    integral floats are rejected as non-integers."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        try:
            if isinstance(value, (bool, np.bool_)):
                raise TypeError
            value_int = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {_describe(value)}") from None
    else:
        value_int = int(value)
    if minimum is not None and value_int < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value_int}")
    if value_int > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value_int}")
    return value_int


def check_input_shape(input_shape, name="input_shape"):
    """``input_shape`` as a tuple of four non-negative Python ints ``(N, C, H, W)``."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence (N, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got {input_shape!r}")
    return tuple(check_int(s, f"{name} entries", minimum=0) for s in shape)


#: larger results are taken for a mistake in the sizes rather than attempted
MAX_RESULT_BYTES = 1 << 40


def empty_result(shape, dtype):
    """``np.empty(shape, dtype)``, refusing absurd sizes with a ValueError, not a MemoryError."""
    nbytes = np.dtype(dtype).itemsize
    for size in shape:  # exact Python ints (np.prod would overflow or, with object, be slow)
        nbytes *= int(size)
    if nbytes > MAX_RESULT_BYTES:
        raise ValueError(
            f"the result would have shape {tuple(shape)} ({nbytes / 2**30:.0f} GiB); "
            "check the pad, stride and window sizes"
        )
    return np.empty(shape, dtype=dtype)


def window_output_size(size, window, stride, pad, size_name, window_name):
    """``(size + 2*pad - window)//stride + 1``, raising if the window does not fit."""
    padded = size + 2 * pad
    if window > padded:
        raise ValueError(
            f"{window_name}={window} is larger than the padded {size_name} "
            f"({size} + 2*pad={pad} = {padded})"
        )
    return (padded - window) // stride + 1


def checked_out(out, shape, dtype, name="out", inputs=()):
    """A fresh array when ``out`` is None, else ``out`` once it is known to be a usable
    destination: a writeable C-contiguous ``dtype`` array of ``shape`` that shares no
    memory with any of ``inputs``."""
    if out is None:
        return empty_result(shape, dtype)
    if not (
        isinstance(out, np.ndarray)
        and out.shape == tuple(shape)
        and out.dtype == dtype
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        raise ValueError(
            f"{name} must be a writeable C-contiguous {dtype} array of shape {tuple(shape)}, "
            f"got {getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    for arr in inputs:
        if isinstance(arr, np.ndarray) and np.may_share_memory(out, arr):
            raise ValueError(f"{name} must not share memory with the inputs or other outputs")
    return out
