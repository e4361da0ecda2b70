"""Reading and writing weights and checkpoints: restricted pickle, ``.npz``, atomic saves.

Every file the package reads back goes through :func:`load_file`, which by default
unpickles only the book's format and our checkpoints (dicts, lists, tuples, strings,
numbers, ``None`` and NumPy arrays, dtypes and scalars of bool, integer, floating or
complex kinds) and never calls anything else a pickle names. ``trusted=True`` is plain
:func:`pickle.load`. A path ending in ``.npz`` is read and written with
:func:`numpy.load` / :func:`numpy.savez`, without pickle.
"""

import json
import os
import pickle
import re
import socket
import struct
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["LoadError", "load_file", "save_file"]


class LoadError(ValueError):
    """A weights or checkpoint file that cannot be loaded; the message names the file."""


# ---------------------------------------------------------------- restricted unpickling
_ALLOWED_DTYPE_KINDS = "biufc"


def _checked_dtype(dtype, source):
    dtype = np.dtype(dtype)
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.hasobject or dtype.fields:
        raise LoadError(
            f"{source}: refused NumPy dtype {dtype.str!r} "
            "(only bool, integer, floating and complex arrays are accepted)"
        )
    return dtype


def _restricted_globals(source):
    """``{(module, name): callable}`` a restricted pickle may name, each checking its input.

    The NumPy callables are taken from what this NumPy's own arrays and scalars reduce to,
    and are listed under both the 1.x (``numpy.core``) and 2.x (``numpy._core``) names.
    """
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]

    def make_dtype(spec, *args):
        dtype = np.dtype(spec, *args)
        _checked_dtype(dtype, source)
        return dtype

    def make_reconstruct(subtype, shape, dtype_code):
        if subtype is not np.ndarray:
            raise LoadError(f"{source}: refused array subclass {subtype!r}")
        return reconstruct(subtype, shape, dtype_code)

    def make_frombuffer(buffer, dtype, shape, order):
        return frombuffer(buffer, _checked_dtype(dtype, source), shape, order)

    def make_scalar(dtype, *state):
        return scalar(_checked_dtype(dtype, source), *state)

    def encode_latin1(text, encoding="latin1"):
        # protocol 2 writes bytes as _codecs.encode(str, "latin1")
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise LoadError(f"{source}: refused _codecs.encode(..., {encoding!r})")
        return text.encode("latin1")

    allowed = {
        ("numpy", "dtype"): make_dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("_codecs", "encode"): encode_latin1,
        ("collections", "OrderedDict"): dict,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(core + ".multiarray", "_reconstruct")] = make_reconstruct
        allowed[(core + ".multiarray", "scalar")] = make_scalar
        allowed[(core + ".numeric", "_frombuffer")] = make_frombuffer
    return allowed


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, whose opcodes can be overridden: ``BUILD`` is checked
    (a dtype's state can set its object flag), classes are never instantiated."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source):
        super().__init__(file)
        self._source = source
        self._allowed = _restricted_globals(source)

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise LoadError(
                f"{self._source}: refused to load global {module}.{name}: only dicts, lists, "
                "tuples, strings, numbers, None and NumPy arrays are loaded by default; pass "
                "trusted=True (CLI: --trust-pickle) only for a file you trust"
            ) from None

    def persistent_load(self, pid):
        raise LoadError(f"{self._source}: refused persistent id {pid!r}")

    def load_build(self):
        target = self.stack[-2]
        if not isinstance(target, (np.dtype, np.ndarray)):
            raise LoadError(
                f"{self._source}: refused to set the state of a {type(target).__name__}"
            )
        super().load_build()
        _checked_dtype(target if isinstance(target, np.dtype) else target.dtype, self._source)

    def load_reduce(self):
        if self.stack[-2] is np.ndarray:  # only an argument of _reconstruct
            raise LoadError(f"{self._source}: refused to call numpy.ndarray")
        super().load_reduce()

    def refuse_instantiation(self):
        raise LoadError(
            f"{self._source}: refused to instantiate a class (pickle opcodes OBJ, INST, NEWOBJ)"
        )

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.REDUCE[0]] = load_reduce
    for _opcode in (pickle.OBJ, pickle.INST, pickle.NEWOBJ, pickle.NEWOBJ_EX):
        dispatch[_opcode[0]] = refuse_instantiation
    del _opcode


def _check_plain(obj, source):
    """Refuse any object in the loaded tree outside the accepted types."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) in (list, tuple):
            stack.extend(item)
        elif type(item) is np.ndarray or isinstance(item, np.generic):
            _checked_dtype(item.dtype, source)
        elif not (item is None or type(item) in (str, int, float, bool, complex)):
            raise LoadError(f"{source}: refused a {type(item).__name__} object")


# Errors a damaged or foreign file raises from inside pickle or NumPy.
_FORMAT_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
    UnicodeDecodeError,
    struct.error,
    zipfile.BadZipFile,
    MemoryError,
)


def _load_pickle(path, source, trusted):
    with open(path, "rb") as f:
        try:
            if trusted:
                return pickle.load(f)
            obj = _RestrictedUnpickler(f, source).load()
        except LoadError:
            raise
        except _FORMAT_ERRORS as exc:
            raise LoadError(
                f"{source}: not a pickle file, or a truncated one: {type(exc).__name__}: {exc}"
            ) from None
    _check_plain(obj, source)
    return obj


# ---------------------------------------------------------------- .npz
# Anything but a flat dict of arrays is stored as a JSON skeleton under this key, with
# each array replaced by {"__array__": name} and tuples by {"__tuple__": [...]}.
_SKELETON = "__nntrain_skeleton__"


def _to_npz(obj):
    if (
        isinstance(obj, dict)
        and obj
        and all(
            isinstance(k, str) and k != _SKELETON and type(v) is np.ndarray for k, v in obj.items()
        )
    ):
        return dict(obj)
    arrays = {}

    def encode(item):
        if isinstance(item, (np.ndarray, np.generic)):
            name = f"a{len(arrays)}"
            arrays[name] = np.asarray(item)
            return {"__array__": name, "scalar": isinstance(item, np.generic)}
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise TypeError(".npz files hold dicts with string keys only")
            return {"__dict__": {k: encode(v) for k, v in item.items()}}
        if isinstance(item, (list, tuple)):
            values = [encode(v) for v in item]
            return {"__tuple__": values} if isinstance(item, tuple) else values
        if item is None or type(item) in (str, int, float, bool):
            return item
        raise TypeError(f".npz files cannot hold a {type(item).__name__}")

    arrays[_SKELETON] = np.array(json.dumps(encode(obj)))
    return arrays


def _from_npz(arrays):
    if _SKELETON not in arrays:
        return arrays

    def decode(item):
        if isinstance(item, list):
            return [decode(v) for v in item]
        if not isinstance(item, dict):
            return item
        if "__tuple__" in item:
            return tuple(decode(v) for v in item["__tuple__"])
        if "__dict__" in item:
            return {k: decode(v) for k, v in item["__dict__"].items()}
        array = arrays[item["__array__"]]
        return array[()] if item.get("scalar") else array

    return decode(json.loads(str(arrays.pop(_SKELETON))))


def _load_npz(path, source):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        obj = _from_npz(arrays)
    except _FORMAT_ERRORS + (OSError, RecursionError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise LoadError(
            f"{source}: not a complete .npz file of arrays: {type(exc).__name__}: {exc}"
        ) from None
    _check_plain(obj, source)
    return obj


def _is_npz(path):
    return path.lower().endswith(".npz")


# ---------------------------------------------------------------- public
def load_file(path, *, trusted=False):
    """Read a weights or checkpoint file written by :func:`save_file` or the book.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` archive (read with ``allow_pickle=False``) or, for any other suffix, a
        pickle (protocols 2 to 5, written by NumPy 1.x or 2.x).
    trusted : bool
        ``False`` (default): unpickle only dicts, lists, tuples, strings, numbers, ``None``
        and NumPy arrays, dtypes and scalars; any other global a pickle names raises
        :class:`LoadError` before it is imported or called. ``True``: plain
        :func:`pickle.load`, which can run arbitrary code; only for files you trust.

    Returns
    -------
    object
        The stored object; arrays come back as plain ``numpy.ndarray``.

    Raises
    ------
    LoadError
        The file is empty, truncated, not of its suffix's format, or holds a refused object.
    FileNotFoundError
        ``path`` does not exist.
    """
    path = os.fspath(path)
    _remove_stale_temp_files(path)
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
        if not f.tell():
            raise LoadError(f"{path}: the file is empty")
    if _is_npz(path) != is_zip:
        raise LoadError(
            f"{path}: the file is {'a' if is_zip else 'not a'} zip archive, but "
            "a path ending in .npz is read as a NumPy .npz archive (a zip) and "
            "any other as a pickle"
        )
    if is_zip:
        return _load_npz(path, path)
    return _load_pickle(path, path, trusted)


def save_file(obj, path):
    """Write ``obj`` to ``path`` so that ``path`` is either the old file or the complete new one.

    ``.npz`` paths are written with :func:`numpy.savez` (a flat dict of arrays as is,
    anything else as a JSON skeleton plus its arrays); other paths are pickled with the
    highest protocol. The data goes to a temporary file ``.<name>.<pid>-<host>.<random>.tmp``
    in the same directory, is fsynced, then ``os.replace``d over ``path``. Temporary files
    of ``path`` left by a killed writer are removed by the next ``save_file`` or
    ``load_file`` of ``path`` on the same machine (``<host>``, a hash of its name): only
    those whose writer process ``<pid>`` no longer exists, so live writers never remove
    each other's files (one whose PID has been reused waits until that process ends).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temp_files(path)
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix=f"{_temp_prefix(path)}{os.getpid()}-{_host_tag()}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            if _is_npz(path):
                np.savez(f, **_to_npz(obj))
            else:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


# ---------------------------------------------------------------- temporary files
def _temp_prefix(path):
    return "." + os.path.basename(path) + "."


def _host_tag():
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists under another user
        return True
    return True


def _remove_stale_temp_files(path):
    """Remove ``path``'s temporary files whose writer on this machine is gone (POSIX only)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    pattern = re.compile(re.escape(prefix) + r"(\d+)-" + _host_tag() + r"\.[^.]+\.tmp\Z")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match and not _pid_exists(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _fsync_directory(directory):
    """Make the rename durable where the OS allows opening a directory (POSIX)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- checking loaded values
def checked_arrays(
    values, expected, *, source, what="parameter", strict=True, allow_nonfinite=False
):
    """Validate a loaded dict of arrays against ``expected`` and return converted copies.

    Parameters
    ----------
    values : dict
        Loaded ``{key: array-like}``.
    expected : dict
        ``{key: ndarray}`` whose shapes and (floating) dtypes the values must take.
    source : str
        The file name, for messages.
    what : str
        What a key names, for messages (``"parameter"``, ``"Adam m"``, ...).
    strict : bool
        Refuse keys of ``values`` that ``expected`` does not have (else they are ignored).
    allow_nonfinite : bool
        Accept NaN and infinite values (a diverged run); values that overflow the target
        dtype are refused either way.

    Returns
    -------
    dict
        ``{key: ndarray}`` for every key of ``expected``, C-contiguous, of its dtype.

    Raises
    ------
    LoadError
        Not a dict, missing or (with ``strict``) unknown keys, a non-floating, wrongly
        shaped, non-finite or overflowing value; the message names the key.
    """
    if not isinstance(values, dict):
        raise LoadError(
            f"{source}: expected a dict of {what} arrays, found a {type(values).__name__}"
        )
    missing = sorted(set(expected) - set(values), key=str)
    unexpected = sorted(set(values) - set(expected), key=str) if strict else []
    if missing or unexpected:
        raise LoadError(
            f"{source}: {what} keys do not match (missing {missing}, "
            f"unexpected {unexpected}; expected {sorted(expected)})"
        )
    return {
        key: checked_array(
            values[key],
            source=source,
            key=f"{what} {key!r}",
            shape=ref.shape,
            dtype=ref.dtype,
            allow_nonfinite=allow_nonfinite,
        )
        for key, ref in expected.items()
    }


def checked_array(value, *, source, key, shape, dtype, allow_nonfinite=False):
    """``value`` as a new C-contiguous ``dtype`` array of ``shape``, or :class:`LoadError`.

    ``value`` must hold real floating-point numbers; the checks are those of
    :func:`checked_arrays`.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise LoadError(f"{source}: {key}: not an array: {exc}") from None
    if array.dtype.kind != "f":
        raise LoadError(
            f"{source}: {key}: expected a floating-point array, found dtype {array.dtype}"
        )
    if array.shape != tuple(shape):
        raise LoadError(f"{source}: {key}: expected shape {tuple(shape)}, found {array.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.array(array, dtype=dtype, copy=True, order="C")
    finite = np.isfinite(array)
    if not (allow_nonfinite or finite.all()):
        raise LoadError(
            f"{source}: {key}: {array.size - np.count_nonzero(finite)} of "
            f"{array.size} values are NaN or infinite (allow_nonfinite=True "
            "accepts them)"
        )
    if not np.array_equal(np.isfinite(converted), finite):
        raise LoadError(
            f"{source}: {key}: values up to {np.max(np.abs(array[finite])):.3g} "
            f"overflow {np.dtype(dtype)}"
        )
    return converted
