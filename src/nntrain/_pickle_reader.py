"""The restricted unpickler: plain data and NumPy arrays, each array built here from the
shape, dtype and bytes the file gives, never by NumPy's own reconstructors.

Reading takes two passes. The first walks the opcodes (:func:`pickletools.genops`) without
running them: it refuses globals outside :data:`_GLOBALS`, frames longer than the file and
lengths past its end, and charges the memory the objects the opcodes make can take at
most. Only then does the second pass unpickle; it refuses the opcodes that make other
objects (instances, sets, persistent ids, extensions, out-of-band buffers) when it reaches
them, and every call and state (``REDUCE``, ``BUILD``) is handled by this module:

* ``numpy.dtype(spec, align, copy)`` and its ``BUILD`` state become one of
  :data:`~nntrain._untrusted.PLAIN_DTYPES` (the state is checked to be that of a plain
  dtype, and set once);
* ``_reconstruct(ndarray, (0,), b"b")`` stands for an array until its one ``BUILD`` gives
  shape, dtype, order flag and bytes; ``_frombuffer(bytes, dtype, shape, order)`` (protocol
  5) and ``scalar(dtype, bytes)`` give all of it at once. Each makes a new array owning a
  copy of exactly those bytes, charged to the budget first (in the machine's byte order
  after a ``BUILD``, as NumPy's ``ndarray.__setstate__`` gives it);
* ``_codecs.encode(str, "latin1")`` and ``bytes()`` (protocol 2's bytes) and
  ``collections.OrderedDict()`` (a dict) are the only other calls.
"""

import pickle
import pickletools
import struct
import sys

from ._untrusted import (
    PLAIN_DTYPES,
    LoadError,
    array_from_bytes,
    check_tree,
    describe,
    plain_dtype,
    printable,
)

__all__ = ["read_pickle"]

# ---------------------------------------------------------------- costs
#: bytes a value takes on the unpickler's stack and in the container it ends up in
_SLOT = 48
#: bytes the check of the loaded tree keeps per container
_WALK = 100
#: upper bounds (CPython, 64 bit) of the bytes each opcode's new object takes, plus its slot
_COSTS = {
    "MARK": 72,
    "NONE": _SLOT,
    "NEWTRUE": _SLOT,
    "NEWFALSE": _SLOT,
    "DUP": _SLOT,
    "GET": _SLOT,
    "BINGET": _SLOT,
    "LONG_BINGET": _SLOT,
    "EMPTY_TUPLE": _SLOT,
    "GLOBAL": _SLOT,
    "STACK_GLOBAL": _SLOT,
    "BININT": 32 + _SLOT,
    "BININT1": 32 + _SLOT,
    "BININT2": 32 + _SLOT,
    "BINFLOAT": 32 + _SLOT,
    "FLOAT": 32 + _SLOT,
    "EMPTY_LIST": 56 + _WALK + _SLOT,
    "LIST": 128 + _WALK + _SLOT,
    "EMPTY_DICT": 232 + _WALK + _SLOT,
    "DICT": 304 + _WALK + _SLOT,
    "TUPLE": 64 + _WALK + _SLOT,
    "TUPLE1": 64 + _WALK + _SLOT,
    "TUPLE2": 64 + _WALK + _SLOT,
    "TUPLE3": 64 + _WALK + _SLOT,
    "PUT": 96,
    "BINPUT": 96,
    "LONG_BINPUT": 96,
    "MEMOIZE": 96,
    "REDUCE": 256 + _SLOT,  # the result; arrays charge their data when built
    "BUILD": 0,
    "APPEND": 0,
    "APPENDS": 0,
    "SETITEM": 0,
    "SETITEMS": 0,
    "POP": 0,
    "POP_MARK": 0,
    "PROTO": 0,
    "STOP": 0,
    "FRAME": 0,  # charged as twice the largest frame, see _scan
}
#: opcodes whose new object is their argument: they cost its size (``sys.getsizeof``)
_VALUES = (
    "INT",
    "LONG",
    "LONG1",
    "LONG4",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
)
for _name in _VALUES:
    _COSTS[_name] = _SLOT
del _name

_REFUSED_OPCODES = {
    "PERSID": "persistent ids",
    "BINPERSID": "persistent ids",
    "INST": "class instances",
    "OBJ": "class instances",
    "NEWOBJ": "class instances",
    "NEWOBJ_EX": "class instances",
    "EXT1": "copyreg extensions",
    "EXT2": "copyreg extensions",
    "EXT4": "copyreg extensions",
    "EMPTY_SET": "sets",
    "ADDITEMS": "sets",
    "FROZENSET": "sets",
    "NEXT_BUFFER": "out-of-band buffers",
    "READONLY_BUFFER": "out-of-band buffers",
}


def _scan(reader, size, source, meter):
    """Walk the opcodes without running them: refuse what is never loaded, charge ``meter``
    for the objects the opcodes can make, then rewind ``reader``."""
    total, largest_frame = 0, 0
    try:
        for opcode, arg, pos in pickletools.genops(reader):
            name = opcode.name
            if name in _REFUSED_OPCODES:
                continue  # the unpickler refuses it if it gets there, after its global
            if name == "GLOBAL":
                module, _, global_name = arg.partition(" ")
                _global(module, global_name, source)
            elif name == "FRAME":
                if arg > size - pos - 9:
                    raise LoadError(
                        f"{source}: not a pickle file, or a truncated one: a frame of {arg} "
                        f"bytes at byte {pos}, {size - pos - 9} bytes before the end"
                    )
                largest_frame = max(largest_frame, arg)
            total += _COSTS[name] + (sys.getsizeof(arg) if name in _VALUES else 0)
    except (ValueError, struct.error, UnicodeDecodeError, OverflowError, IndexError) as exc:
        if isinstance(exc, LoadError):
            raise
        raise LoadError(
            f"{source}: not a pickle file, or a truncated one: {type(exc).__name__}: "
            f"{printable(str(exc)[:200])}"
        ) from None
    meter.charge(total + 2 * largest_frame, "the objects the pickle's opcodes make")
    reader.seek(0)


# ---------------------------------------------------------------- what a pickle may call
class _Builder:
    """A global a pickle may name; ``REDUCE`` calls ``build(unpickler, args)``."""

    def __init__(self, qualname, build):
        self.qualname = qualname
        self.build = build
        self.description = f"the global {qualname}"


class _Marker:
    """A global that is only ever an argument (``numpy.ndarray`` for ``_reconstruct``)."""

    def __init__(self, qualname):
        self.description = f"the global {qualname}"


class _Dtype:
    """A ``numpy.dtype(spec)`` call whose ``BUILD`` state is still to come; then
    ``dtype`` is the plain NumPy dtype both name together."""

    __hash__ = None
    description = "a NumPy dtype (dtypes are loaded only as those of arrays and scalars)"

    def __init__(self, spec):
        self.spec = spec
        self.dtype = None


class _PendingArray:
    """A ``_reconstruct`` call whose ``BUILD`` state is still to come; then the array
    replaces it on the stack and in the memo."""

    __hash__ = None

    def __init__(self):
        self.memo_keys = []
        self.built = False

    @property
    def description(self):
        if self.built:
            return "a reference to an array taken before its state was set"
        return "an array whose data the file never gives (_reconstruct without BUILD)"


class _Memo(dict):
    """The unpickler's memo; remembers where each pending array is stored."""

    def __setitem__(self, key, value):
        if isinstance(value, _PendingArray):
            value.memo_keys.append(key)
        super().__setitem__(key, value)


def _flag(value, source, what):
    if type(value) not in (bool, int) or value not in (0, 1):
        raise LoadError(f"{source}: {what}: expected a bool, found {describe(value)}")
    return bool(value)


def _checked_args(args, count, source, qualname):
    if type(args) is not tuple or len(args) != count:
        raise LoadError(f"{source}: {qualname}: expected {count} arguments, found {describe(args)}")
    return args


def _built_dtype(dtype, source, what):
    if not isinstance(dtype, _Dtype):
        raise LoadError(f"{source}: {what}: expected a NumPy dtype, found {describe(dtype)}")
    if dtype.dtype is None:
        raise LoadError(f"{source}: {what}: a NumPy dtype used before its state was set")
    return dtype.dtype


def _make_dtype(unpickler, args):
    spec, align, copy = _checked_args(args, 3, unpickler.source, "numpy.dtype")
    if type(spec) is not str or not any(code[1:] == spec for code in PLAIN_DTYPES):
        plain_dtype(spec, unpickler.source)  # raises: names the dtype and what is loaded
    _flag(align, unpickler.source, "numpy.dtype align")
    _flag(copy, unpickler.source, "numpy.dtype copy")
    return _Dtype(spec)


def _set_dtype_state(dtype, state, source):
    """Accept exactly the state NumPy writes for a plain dtype (version 3, or 4 without
    metadata): byte order, and no subarray, fields, size, alignment or flags."""
    if dtype.dtype is not None:
        raise LoadError(f"{source}: refused to set the state of a NumPy dtype twice")
    plain = (
        type(state) is tuple
        and (len(state), state[0]) in ((8, 3), (9, 4))
        and type(state[1]) is str
        and all(v is None for v in state[2:5])
        and all(type(v) is int for v in state[5:8])
        and state[5:8] == (-1, -1, 0)
        and (len(state) == 8 or state[8] is None)
    )
    if not plain:
        raise LoadError(
            f"{source}: refused the state of NumPy dtype {describe(dtype.spec)}: only plain "
            f"dtypes (no subarray, fields, size, alignment or flags) are loaded, found "
            f"{describe(state)}"
        )
    dtype.dtype = plain_dtype(state[1] + dtype.spec, source)


def _make_reconstruct(unpickler, args):
    subtype, shape, code = _checked_args(args, 3, unpickler.source, "_reconstruct")
    if subtype is not _NDARRAY:
        raise LoadError(f"{unpickler.source}: refused array subclass {describe(subtype)}")
    if (
        type(shape) is not tuple
        or len(shape) != 1
        or type(shape[0]) is not int
        or shape[0] != 0
        or type(code) not in (bytes, str)
        or code not in (b"b", "b")
    ):
        raise LoadError(
            f"{unpickler.source}: _reconstruct: expected the arguments (ndarray, (0,), b'b') "
            f"NumPy writes, found shape {describe(shape)} and code {describe(code)}"
        )
    return _PendingArray()


def _build_array(unpickler, pending, state):
    """The array ``pending`` stands for, from its ``BUILD`` state."""
    source = unpickler.source
    if pending.built:
        raise LoadError(f"{source}: refused to set the state of an array twice")
    pending.built = True
    if type(state) is tuple and len(state) == 5:
        if type(state[0]) is not int or state[0] != 1:
            raise LoadError(f"{source}: array state version {describe(state[0])} is not 1")
        state = state[1:]
    if type(state) is not tuple or len(state) != 4:
        raise LoadError(
            f"{source}: expected an array state (shape, dtype, order, bytes), "
            f"found {describe(state)}"
        )
    shape, dtype, fortran, data = state
    dtype = _built_dtype(dtype, source, "array state")
    fortran = _flag(fortran, source, "array state Fortran flag")
    return array_from_bytes(data, dtype, shape, fortran, unpickler.meter, "an array", native=True)


def _make_frombuffer(unpickler, args):
    source = unpickler.source
    data, dtype, shape, order = _checked_args(args, 4, source, "_frombuffer")
    if type(order) is not str or order not in ("C", "F"):
        raise LoadError(
            f"{source}: _frombuffer: expected order 'C' or 'F', found {describe(order)}"
        )
    dtype = _built_dtype(dtype, source, "_frombuffer")
    return array_from_bytes(data, dtype, shape, order == "F", unpickler.meter, "an array")


def _make_scalar(unpickler, args):
    dtype, data = _checked_args(args, 2, unpickler.source, "scalar")
    dtype = _built_dtype(dtype, unpickler.source, "scalar")
    return array_from_bytes(data, dtype, (), False, unpickler.meter, "a scalar")[()]


def _make_latin1_bytes(unpickler, args):
    # protocol 2 writes bytes as _codecs.encode(str, "latin1")
    text, encoding = _checked_args(args, 2, unpickler.source, "_codecs.encode")
    if type(encoding) is not str or encoding not in ("latin1", "latin-1") or type(text) is not str:
        raise LoadError(f"{unpickler.source}: refused _codecs.encode(..., {describe(encoding)})")
    unpickler.meter.charge(len(text) + 33, "bytes")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise LoadError(f"{unpickler.source}: _codecs.encode: not latin-1 text") from None


def _make_empty_bytes(unpickler, args):
    # protocol 2 writes b"" as bytes()
    _checked_args(args, 0, unpickler.source, "bytes")
    return b""


def _make_dict(unpickler, args):
    # collections.OrderedDict() with its items set afterwards
    _checked_args(args, 0, unpickler.source, "collections.OrderedDict")
    return {}


_NDARRAY = _Marker("numpy.ndarray")


def _globals():
    """``{(module, name): builder or marker}``: NumPy's names under both the 1.x
    (``numpy.core``) and 2.x (``numpy._core``) modules; protocol 2's ``__builtin__``."""
    table = {
        ("numpy", "dtype"): _make_dtype,
        ("_codecs", "encode"): _make_latin1_bytes,
        ("builtins", "bytes"): _make_empty_bytes,
        ("__builtin__", "bytes"): _make_empty_bytes,
        ("collections", "OrderedDict"): _make_dict,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(core + ".multiarray", "_reconstruct")] = _make_reconstruct
        table[(core + ".multiarray", "scalar")] = _make_scalar
        table[(core + ".numeric", "_frombuffer")] = _make_frombuffer
    built = {key: _Builder(".".join(key), build) for key, build in table.items()}
    built[("numpy", "ndarray")] = _NDARRAY
    return built


_GLOBALS = _globals()


def _global(module, name, source):
    try:
        return _GLOBALS[(module, name)]
    except KeyError:
        raise LoadError(
            f"{source}: refused to load global {printable(module[:100])}.{printable(name[:100])}: "
            "only dicts, lists, tuples, strings, numbers, None and NumPy arrays and scalars "
            "are loaded by default; pass trusted=True (CLI: --trust-pickle) only for a file "
            "you trust"
        ) from None


# ---------------------------------------------------------------- the unpickler
class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler (whose opcodes can be replaced) with every call and
    state handled by this module."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source, meter):
        super().__init__(file)
        self.memo = _Memo()
        self.source = source
        self.meter = meter

    def find_class(self, module, name):
        return _global(module, name, self.source)

    def persistent_load(self, pid):
        raise LoadError(f"{self.source}: refused a persistent id")

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if not isinstance(func, _Builder):
            raise LoadError(f"{self.source}: refused to call {describe(func)}")
        stack[-1] = func.build(self, args)

    def load_build(self):
        stack = self.stack
        state = stack.pop()
        target = stack[-1]
        if isinstance(target, _Dtype):
            _set_dtype_state(target, state, self.source)
        elif isinstance(target, _PendingArray):
            array = _build_array(self, target, state)
            stack[-1] = array
            for key in target.memo_keys:
                if self.memo.get(key) is target:
                    self.memo[key] = array
        else:
            raise LoadError(f"{self.source}: refused to set the state of {describe(target)}")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build


def _refusal(name, what):
    def refuse(unpickler):
        raise LoadError(
            f"{unpickler.source}: refused pickle opcode {name}: {what} are never loaded"
        )

    return refuse


for _name, _what in _REFUSED_OPCODES.items():
    _Unpickler.dispatch[getattr(pickle, _name)[0]] = _refusal(_name, _what)
del _name, _what


# Errors a damaged pickle raises from inside the unpickler.
_FORMAT_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeDecodeError,
    struct.error,
)


def read_pickle(reader, size, source, meter):
    """The object the pickle in ``reader`` (``size`` bytes) holds, read within ``meter``."""
    _scan(reader, size, source, meter)
    try:
        obj = _Unpickler(reader, source, meter).load()
    except LoadError:
        raise
    except _FORMAT_ERRORS as exc:
        raise LoadError(
            f"{source}: not a pickle file, or a truncated one: {type(exc).__name__}: "
            f"{printable(str(exc)[:200])}"
        ) from None
    check_tree(obj, source)
    return obj
