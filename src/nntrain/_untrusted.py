"""What the readers of weights and checkpoint files share: the error they raise, the memory
meter, the dtypes an array may have, arrays built from raw bytes, and the check of the tree
of values a file gave."""

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "MAX_DEPTH",
    "BoundedReader",
    "Budget",
    "LoadError",
    "Meter",
    "check_tree",
    "describe",
    "new_array",
    "plain_dtype",
    "printable",
]

#: containers nested deeper than this are refused (checkpoints nest four levels)
MAX_DEPTH = 32
#: the most dimensions an array may have
MAX_NDIM = 32
#: bytes of an ndarray object without its data
ARRAY_OVERHEAD = 112


class LoadError(ValueError):
    """A weights or checkpoint file that cannot be loaded; the message names the file and,
    where there is one, the key."""


def printable(text):
    """``text`` with each non-printable character (line breaks, terminal controls) escaped
    as a Python string literal would show it, so a name cannot forge output lines."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(value, limit=60):
    """A short description of a loaded value for messages: never recursive, never long."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        text = repr(value)
        return printable(text if len(text) <= limit else text[: limit - 3] + "...")
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of length {len(value)}"
    return getattr(value, "description", None) or f"a {type(value).__name__}"


# ---------------------------------------------------------------- memory
class Budget(NamedTuple):
    """The most bytes reading a file may allocate, and how that number was set."""

    limit: int
    basis: str


class Meter:
    """Bytes a load has committed to; :meth:`charge` is called before each allocation it
    bounds and raises :class:`LoadError` once the budget would be exceeded."""

    def __init__(self, budget, source):
        self.budget = budget
        self.source = source
        self.spent = 0

    def charge(self, nbytes, what):
        self.spent += nbytes
        if self.spent > self.budget.limit:
            raise LoadError(
                f"{self.source}: {what} would take more memory than loading this file may "
                f"({self.budget.limit} bytes: {self.budget.basis})"
            )


# ---------------------------------------------------------------- dtypes and arrays
def _plain_dtypes():
    table = {f"|{code}": np.dtype(code) for code in ("b1", "i1", "u1")}
    for code in ("i2", "i4", "i8", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"):
        for order in "<>":
            table[order + code] = np.dtype(order + code)
    return table


#: the dtypes an array or scalar in a file may have, by NumPy's ``dtype.str``
PLAIN_DTYPES = _plain_dtypes()


def plain_dtype(spec, source, where=""):
    """The NumPy dtype named by ``spec`` (``"<f8"``, ``"|b1"``, ...) if it is one of
    :data:`PLAIN_DTYPES`, else :class:`LoadError`."""
    dtype = PLAIN_DTYPES.get(spec) if isinstance(spec, str) else None
    if dtype is None:
        raise LoadError(
            f"{source}: {where}refused NumPy dtype {describe(spec)} (only arrays and scalars "
            "of bool, integer, floating and complex dtypes are loaded, in either byte order)"
        )
    return dtype


def checked_shape(shape, source, where=""):
    """``shape`` as a tuple of non-negative ints, or :class:`LoadError`."""
    if (
        type(shape) is not tuple
        or len(shape) > MAX_NDIM
        or not all(type(n) is int and 0 <= n < 2**62 for n in shape)
    ):
        raise LoadError(
            f"{source}: {where}expected an array shape (a tuple of at most {MAX_NDIM} "
            f"non-negative ints), found {describe(shape)}"
        )
    return shape


def new_array(dtype, shape, fortran, meter, what):
    """``(array, raw)``: a new uninitialised array and a flat ``uint8`` view of its bytes
    in the order of the file (Fortran order if ``fortran``), after charging ``meter``.

    The caller fills all of ``raw``.
    """
    if math.prod(n for n in shape if n) * dtype.itemsize >= 2**62:
        raise LoadError(f"{meter.source}: {what}: shape {shape} is too large for an array")
    nbytes = math.prod(shape) * dtype.itemsize
    meter.charge(nbytes + ARRAY_OVERHEAD, f"{what} of shape {shape} and dtype {dtype}")
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    raw = (array.T if fortran else array).reshape(-1).view(np.uint8)
    return array, raw


def check_bools(array, raw, source, what):
    """Refuse a bool array holding bytes other than 0 and 1."""
    if array.dtype.kind == "b" and raw.size and raw.max() > 1:
        raise LoadError(f"{source}: {what}: a bool array holds bytes other than 0 and 1")


def array_from_bytes(data, dtype, shape, fortran, meter, what="an array", native=False):
    """A new array of ``dtype`` and ``shape`` owning a copy of ``data``, its bytes in C
    order (Fortran order if ``fortran``); ``len(data)`` must be exactly the array's size.
    ``native``: the array takes the machine's byte order (the values are kept), as NumPy's
    ``ndarray.__setstate__`` does."""
    source = meter.source
    shape = checked_shape(shape, source, f"{what}: ")
    if not isinstance(data, (bytes, bytearray)):
        raise LoadError(f"{source}: {what}: expected its data as bytes, found {describe(data)}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise LoadError(
            f"{source}: {what} of shape {shape} and dtype {dtype} takes {expected} bytes, "
            f"the file gives {len(data)}"
        )
    if native and not dtype.isnative:
        array, raw = new_array(dtype.newbyteorder("="), shape, fortran, meter, what)
        raw.view(array.dtype)[:] = np.frombuffer(data, dtype=dtype)
    else:
        array, raw = new_array(dtype, shape, fortran, meter, what)
        raw[:] = np.frombuffer(data, dtype=np.uint8)
    check_bools(array, raw, source, what)
    return array


# ---------------------------------------------------------------- the loaded tree
_SCALARS = (str, int, float, bool, complex, type(None))


def _path(keys):
    return "".join(f"[{describe(key)}]" for key in keys) or "the top level"


def check_tree(obj, source):
    """Refuse anything in ``obj`` but dicts (with scalar keys), lists, tuples, ``None``,
    strings, numbers and arrays or scalars of :data:`PLAIN_DTYPES`; containers nested more
    than :data:`MAX_DEPTH` deep, and containers that contain themselves.

    Each container is checked once however often it is referenced; the walk keeps one
    iterator per level.
    """
    done, active = set(), set()
    frames = [(None, iter([(None, obj)]))]
    keys = []
    while frames:
        container, children = frames[-1]
        entry = next(children, None)
        if entry is None:
            frames.pop()
            if container is not None:
                keys.pop()
                active.discard(id(container))
                done.add(id(container))
            continue
        key, item = entry
        kind = type(item)
        if kind in (dict, list, tuple):
            if id(item) in done:
                continue
            where = _path(keys[1:] + [key] if keys else [])
            if id(item) in active:
                raise LoadError(f"{source}: {where}: a container that contains itself")
            if len(frames) > MAX_DEPTH:
                raise LoadError(f"{source}: {where}: containers nested deeper than {MAX_DEPTH}")
            if kind is dict:
                for k in item:
                    if type(k) not in _SCALARS:
                        raise LoadError(f"{source}: {where}: refused a dict key {describe(k)}")
                children = iter(item.items())
            else:
                children = enumerate(item)
            active.add(id(item))
            keys.append(key)
            frames.append((item, children))
        elif kind in _SCALARS:
            continue
        elif (kind is np.ndarray or isinstance(item, np.generic)) and (
            item.dtype.str in PLAIN_DTYPES and PLAIN_DTYPES[item.dtype.str] == item.dtype
        ):
            continue
        else:
            where = _path(keys[1:] + [key] if keys else [])
            raise LoadError(f"{source}: {where}: refused {describe(item)}")


# ---------------------------------------------------------------- reading
class BoundedReader:
    """A binary file of known size whose reads never ask for more than is left, so that a
    length read from the file never sizes an allocation (``BufferedReader.read(n)``
    allocates ``n`` bytes before reading)."""

    def __init__(self, file, size):
        self._file = file
        self.size = size

    def _left(self, n):
        left = max(self.size - self._file.tell(), 0)
        return left if n is None or n < 0 else min(n, left)

    def read(self, n=-1):
        return self._file.read(self._left(n))

    def readline(self, limit=-1):
        return self._file.readline(self._left(limit))

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        return self._file.readinto(view[: self._left(len(view))])

    def seek(self, offset, whence=0):
        return self._file.seek(offset, whence)

    def tell(self):
        return self._file.tell()

    def seekable(self):
        return True

    def readable(self):
        return True
