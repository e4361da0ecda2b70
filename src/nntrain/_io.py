"""Reading and writing weights and checkpoints: restricted pickle, ``.npz``, atomic saves.

Every file the package reads back goes through :func:`load_file`. By default it reads a
pickle with the restricted unpickler of :mod:`nntrain._pickle_reader` (dicts, lists,
tuples, strings, numbers, ``None`` and NumPy arrays and scalars of bool, integer,
floating and complex dtypes, each array built from the bytes the file gives) and a
``.npz`` archive with :mod:`nntrain._npz`, both within a memory budget set before
reading. ``trusted=True`` reads a pickle with plain :func:`pickle.load`.
"""

import os
import pickle
import re
import socket
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from ._npz import NOT_READ, read_npz, to_npz
from ._pickle_reader import read_pickle
from ._untrusted import BoundedReader, Budget, LoadError, Meter, describe, printable

__all__ = [
    "NOT_READ",
    "Budget",
    "LoadError",
    "checked_array",
    "checked_arrays",
    "default_budget",
    "describe",
    "display_name",
    "load_file",
    "printable",
    "save_file",
    "values_budget",
]

#: what every budget adds to its arrays, for keys, small values and the readers' own state
SLACK = 1 << 20
#: bytes per file byte a load without expectations may take
FILE_FACTOR = 16


def default_budget(size):
    """The budget of a load that expects nothing: ``FILE_FACTOR`` times the file's size."""
    return Budget(FILE_FACTOR * size + SLACK, f"{FILE_FACTOR} x the file's size + 1 MiB")


def values_budget(count, what, extra=0, extra_basis=""):
    """The budget of a load expecting ``count`` array values (``what`` names them): three
    times ``count`` float64 values (a protocol 2 pickle holds an array's bytes as text,
    the bytes made from it and the array built from them), plus ``extra`` bytes and
    :data:`SLACK`."""
    basis = f"3 x {what} at 8 bytes each{extra_basis} + 1 MiB"
    return Budget(3 * 8 * count + extra + SLACK, basis)


def display_name(path):
    """``path`` as it appears in messages: decoded, control characters escaped."""
    return printable(os.fsdecode(path))


# ---------------------------------------------------------------- opening
def _open_regular(path, name):
    """``(binary file, size)`` of the regular file ``path``; :class:`LoadError` for a
    directory, a device or FIFO, or a path that cannot be opened (a symbolic link loop),
    ``FileNotFoundError`` for a missing file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    except FileNotFoundError:
        if os.path.islink(path):
            raise LoadError(f"{name}: a symbolic link to a missing file") from None
        raise
    except OSError as exc:
        raise LoadError(f"{name}: cannot be opened: {exc.strerror or exc}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            kind = "a directory" if stat.S_ISDIR(status.st_mode) else "not a regular file"
            raise LoadError(f"{name}: is {kind}")
        return os.fdopen(fd, "rb"), status.st_size
    except BaseException:
        os.close(fd)
        raise


# Errors a damaged archive raises from inside zipfile and zlib.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    ValueError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    UnicodeDecodeError,
    KeyError,
    OSError,
)


def _load_npz(reader, size, name, meter, only):
    try:
        return read_npz(reader, size, name, meter, only)
    except LoadError:
        raise
    except _ZIP_ERRORS as exc:
        raise LoadError(
            f"{name}: not a complete .npz file of arrays: {type(exc).__name__}: "
            f"{printable(str(exc)[:200])}"
        ) from None


def _load_trusted_pickle(file, name):
    try:
        return pickle.load(file)
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
        OverflowError,
        struct.error,
    ) as exc:
        raise LoadError(
            f"{name}: not a pickle file, or a truncated one: {type(exc).__name__}: "
            f"{printable(str(exc)[:200])}"
        ) from None


def _is_npz(path):
    return os.fsdecode(path).lower().endswith(".npz")


# ---------------------------------------------------------------- public
def load_file(path, *, trusted=False, budget=None, only=None):
    """Read a weights or checkpoint file written by :func:`save_file` or the book.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` archive or, for any other suffix, a pickle (protocols 2 to 5, written
        by NumPy 1.x or 2.x).
    trusted : bool
        ``False`` (default): unpickle only dicts, lists, tuples, strings, numbers,
        ``None`` and NumPy arrays and scalars of bool, integer, floating and complex
        dtypes; anything else raises :class:`LoadError` before it is imported or called.
        ``True``: plain :func:`pickle.load`, which can run arbitrary code and has no
        memory budget; only for files you trust.
    budget : Budget, optional
        The most memory reading may take (default: :func:`default_budget` of the file's
        size); a file needing more raises :class:`LoadError` before the memory is taken.
    only : collection of str, optional
        For a ``.npz`` archive of one array per key: the keys to read; the others come
        back as :data:`NOT_READ` without being decompressed.

    Returns
    -------
    object
        The stored object; arrays come back as new ``numpy.ndarray`` owning their data.

    Raises
    ------
    LoadError
        The file is empty, truncated, not of its suffix's format, holds a refused object,
        needs more memory than ``budget``, or is not a regular file.
    FileNotFoundError
        ``path`` does not exist.
    """
    path = os.fspath(path)
    name = display_name(path)
    _remove_stale_temp_files(path)
    file, size = _open_regular(path, name)
    with file:
        if size == 0:
            raise LoadError(f"{name}: the file is empty")
        is_zip = file.read(4) == b"PK\x03\x04"
        file.seek(0)
        if _is_npz(path) != is_zip:
            raise LoadError(
                f"{name}: the file is {'a' if is_zip else 'not a'} zip archive, but "
                "a path ending in .npz is read as a NumPy .npz archive (a zip) and "
                "any other as a pickle"
            )
        if trusted and not is_zip:
            return _load_trusted_pickle(file, name)
        budget = default_budget(size) if budget is None else budget
        meter = Meter(budget, name)
        if size > budget.limit:
            raise LoadError(
                f"{name}: the file's {size} bytes are more than loading it may take "
                f"({budget.limit} bytes: {budget.basis})"
            )
        reader = BoundedReader(file, size)
        if is_zip:
            return _load_npz(reader, size, name, meter, only)
        return read_pickle(reader, size, name, meter)


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
                np.savez(f, **to_npz(obj))
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
def _keys_text(keys, limit=10):
    shown = ", ".join(describe(key) for key in keys[:limit])
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return f"[{shown}{more}]"


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
    source = printable(source)
    if not isinstance(values, dict):
        raise LoadError(f"{source}: expected a dict of {what} arrays, found {describe(values)}")
    missing = sorted(set(expected) - set(values), key=str)
    unexpected = sorted(set(values) - set(expected), key=str) if strict else []
    if missing or unexpected:
        raise LoadError(
            f"{source}: {what} keys do not match (missing {_keys_text(missing)}, "
            f"unexpected {_keys_text(unexpected)}; expected {sorted(expected)})"
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


def _check_nested(value, shape, source, key):
    """Refuse nested lists or tuples that are not exactly ``shape`` deep and long, or
    whose items are not numbers (or arrays of the remaining shape), before NumPy
    converts them: shared references cannot make the conversion larger than ``shape``."""
    level = [value]
    for depth, length in enumerate(shape):
        items = []
        for item in level:
            if isinstance(item, np.ndarray) and item.shape == shape[depth:]:
                continue
            if type(item) not in (list, tuple) or len(item) != length:
                raise LoadError(
                    f"{source}: {key}: expected shape {shape}, found nested sequences of "
                    f"another shape ({describe(item)} at depth {depth})"
                )
            items.extend(item)
        level = items
    for item in level:
        if isinstance(item, np.ndarray) and item.shape == ():
            continue
        if not isinstance(item, (int, float, complex, np.number, np.bool_)):
            raise LoadError(f"{source}: {key}: expected numbers, found {describe(item)}")


def checked_array(value, *, source, key, shape, dtype, allow_nonfinite=False):
    """``value`` as a new C-contiguous ``dtype`` array of ``shape``, or :class:`LoadError`.

    ``value`` must hold real floating-point numbers; the checks are those of
    :func:`checked_arrays`. Nested lists are checked against ``shape`` before they are
    converted, so the conversion never takes more than the array's own size.
    """
    source = printable(source)
    shape = tuple(shape)
    if type(value) in (list, tuple):
        _check_nested(value, shape, source, key)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LoadError(f"{source}: {key}: not an array: {printable(str(exc)[:200])}") from None
    if array.dtype.kind != "f":
        raise LoadError(
            f"{source}: {key}: expected a floating-point array, found dtype {array.dtype}"
        )
    if array.shape != shape:
        raise LoadError(f"{source}: {key}: expected shape {shape}, found {array.shape}")
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
