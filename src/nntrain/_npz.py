"""``.npz`` weights and checkpoints, without pickle.

A flat dict of arrays is stored as NumPy's ``savez`` stores it, one ``<key>.npy`` member
per array. Anything else is stored as a JSON skeleton under :data:`SKELETON`, with each
array replaced by ``{"__array__": name}`` (and ``"scalar": true`` for a NumPy scalar),
tuples by ``{"__tuple__": [...]}`` and dicts by ``{"__dict__": {...}}``.

Reading parses each member's ``.npy`` header here (magic, version, a literal dict of
``descr``, ``fortran_order`` and ``shape``) and checks dtype and shape before any data is
decompressed; exactly the bytes the header describes are then read into a new array.
Members are read only when asked for (``only``) or named by the skeleton.
"""

import ast
import json
import re
import struct
import zipfile

import numpy as np

from ._untrusted import (
    LoadError,
    check_bools,
    check_tree,
    checked_shape,
    describe,
    new_array,
    plain_dtype,
    printable,
)

__all__ = ["NOT_READ", "SKELETON", "read_npz", "to_npz"]

SKELETON = "__nntrain_skeleton__"
#: a ``.npy`` header longer than this is refused (NumPy's own limit)
MAX_HEADER = 10000
#: bytes read from a member at a time
CHUNK = 1 << 20
#: bytes ``zipfile`` keeps per byte of the central directory, at most (measured: about 11)
DIRECTORY_COST = 16


class _NotRead:
    """The value of a member a read was not asked for (its key is still reported)."""

    description = "a member that was not read"

    def __repr__(self):
        return "NOT_READ"


NOT_READ = _NotRead()


# ---------------------------------------------------------------- writing
def to_npz(obj):
    """``{member name: array}`` for :func:`numpy.savez`."""
    if (
        isinstance(obj, dict)
        and obj
        and all(
            isinstance(k, str) and k != SKELETON and type(v) is np.ndarray for k, v in obj.items()
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

    arrays[SKELETON] = np.array(json.dumps(encode(obj)))
    return arrays


# ---------------------------------------------------------------- reading
def _directory_size(reader, size, source):
    """The size of the archive's central directory, from its end record (ZIP64 too)."""
    tail_size = min(size, 22 + 65535)
    reader.seek(size - tail_size)
    tail = reader.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise LoadError(f"{source}: not a complete zip archive (no end of central directory)")
    directory_size = struct.unpack_from("<L", tail, at + 12)[0]
    if directory_size == 0xFFFFFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        record = struct.unpack_from("<Q", tail, at - 12)[0]
        reader.seek(record)
        zip64 = reader.read(56)
        if len(zip64) == 56 and zip64[:4] == b"PK\x06\x06":
            directory_size = struct.unpack_from("<Q", zip64, 40)[0]
    reader.seek(0)
    return min(directory_size, size)


def _read_exact(member, n, source, what):
    data = member.read(n)
    if len(data) != n:
        raise LoadError(f"{source}: {what} ends after {len(data)} of {n} bytes")
    return data


def _header(member, source, what):
    """``(descr, fortran_order, shape)`` from a ``.npy`` header, checked as literals."""
    magic = _read_exact(member, 8, source, what)
    if magic[:6] != b"\x93NUMPY" or magic[6:] not in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
        raise LoadError(f"{source}: {what} is not a .npy array (magic {describe(magic)})")
    fmt = "<H" if magic[6] == 1 else "<I"
    length = struct.unpack(fmt, _read_exact(member, struct.calcsize(fmt), source, what))[0]
    if length > MAX_HEADER:
        raise LoadError(f"{source}: {what}: a .npy header of {length} bytes (at most {MAX_HEADER})")
    text = _read_exact(member, length, source, what).decode("utf8" if magic[6] == 3 else "latin1")
    try:
        header = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise LoadError(f"{source}: {what}: the .npy header is not a literal dict") from None
    if type(header) is not dict or set(header) != {"descr", "fortran_order", "shape"}:
        raise LoadError(
            f"{source}: {what}: expected a .npy header with keys descr, fortran_order and "
            f"shape, found {describe(header)}"
        )
    fortran = header["fortran_order"]
    if type(fortran) is not bool:
        raise LoadError(f"{source}: {what}: fortran_order is {describe(fortran)}, not a bool")
    shape = checked_shape(header["shape"], source, f"{what}: ")
    return header["descr"], fortran, shape


def _read_data(member, array, raw, source, what):
    """Fill ``raw`` (the array's bytes) from ``member``, which must then be at its end."""
    filled = 0
    while filled < raw.size:
        chunk = member.read(min(CHUNK, raw.size - filled))
        if not chunk:
            raise LoadError(f"{source}: {what} ends after {filled} of {raw.size} data bytes")
        raw[filled : filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        filled += len(chunk)
    if member.read(1):  # also makes zipfile check the CRC
        raise LoadError(f"{source}: {what} holds more data than its header describes")
    check_bools(array, raw, source, what)
    return array


def _open_member(archive, info, source, what):
    if info.flag_bits & 0x1:
        raise LoadError(f"{source}: {what} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise LoadError(
            f"{source}: {what}: compression method {info.compress_type} "
            "(only stored and deflated members are read)"
        )
    return archive.open(info)


def _read_array(archive, info, key, source, meter):
    what = f"member {describe(key)}"
    with _open_member(archive, info, source, what) as member:
        descr, fortran, shape = _header(member, source, what)
        dtype = plain_dtype(descr, source, f"{what}: ")
        array, raw = new_array(dtype, shape, fortran, meter, what)
        return _read_data(member, array, raw, source, what)


def _read_skeleton(archive, info, source, meter):
    """The JSON text of the skeleton member: a 0-d little-endian unicode array."""
    what = f"member {SKELETON!r}"
    with _open_member(archive, info, source, what) as member:
        descr, fortran, shape = _header(member, source, what)
        match = re.fullmatch(r"<U([1-9][0-9]{0,7})", descr) if isinstance(descr, str) else None
        if match is None or shape != ():
            raise LoadError(
                f"{source}: {what}: expected a text scalar (<U...), "
                f"found dtype {describe(descr)} and shape {shape}"
            )
        array, raw = new_array(np.dtype(f"<U{int(match.group(1))}"), (), False, meter, what)
        _read_data(member, array, raw, source, what)
    try:
        text = raw.tobytes().decode("utf-32-le").rstrip("\x00")
    except UnicodeDecodeError:
        raise LoadError(f"{source}: {what}: not UTF-32 text") from None
    # what json.loads and the decoding can make of it, at most
    meter.charge(
        4 * len(text)
        + 600 * (text.count("[") + text.count("{"))
        + 120 * (text.count(",") + text.count(":") + 1),
        "the skeleton's values",
    )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LoadError(f"{source}: {what}: not JSON: {printable(str(exc)[:200])}") from None


def _from_skeleton(skeleton, read_member, source):
    """The object the skeleton describes, reading each array it names once."""
    check_tree(skeleton, source)  # depth, cycles (none in JSON) and types first
    arrays = {}

    def decode(item):
        if isinstance(item, list):
            return [decode(v) for v in item]
        if not isinstance(item, dict):
            return item
        if set(item) == {"__tuple__"} and isinstance(item["__tuple__"], list):
            return tuple(decode(v) for v in item["__tuple__"])
        if set(item) == {"__dict__"} and isinstance(item["__dict__"], dict):
            return {k: decode(v) for k, v in item["__dict__"].items()}
        if (
            set(item) in ({"__array__"}, {"__array__", "scalar"})
            and isinstance(item["__array__"], str)
            and isinstance(item.get("scalar", False), bool)
        ):
            name = item["__array__"]
            if name not in arrays:
                arrays[name] = read_member(name)
            array = arrays[name]
            if not item.get("scalar", False):
                return array
            if array.shape != ():
                raise LoadError(
                    f"{source}: member {describe(name)}: a scalar of shape {array.shape}"
                )
            return array[()]
        raise LoadError(f"{source}: the skeleton holds an unknown entry {describe(item)}")

    return decode(skeleton)


def read_npz(reader, size, source, meter, only=None):
    """The object the ``.npz`` archive in ``reader`` (``size`` bytes) holds.

    Without a skeleton: ``{key: array}`` with :data:`NOT_READ` for the members outside
    ``only`` (all are read if ``only`` is None). With one: the object it describes.
    """
    meter.charge(DIRECTORY_COST * _directory_size(reader, size, source) + 4096, "the zip directory")
    with zipfile.ZipFile(reader) as archive:
        members = {}
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise LoadError(f"{source}: member {describe(info.filename)} is not a .npy array")
            key = info.filename[:-4]
            if key in members:
                raise LoadError(f"{source}: member {describe(info.filename)} appears twice")
            members[key] = info

        def read_member(key):
            if key not in members:
                raise LoadError(f"{source}: the skeleton names a missing member {describe(key)}")
            return _read_array(archive, members[key], key, source, meter)

        if SKELETON in members:
            skeleton = _read_skeleton(archive, members.pop(SKELETON), source, meter)
            obj = _from_skeleton(skeleton, read_member, source)
            check_tree(obj, source)
            return obj
        return {
            key: read_member(key) if only is None or key in only else NOT_READ for key in members
        }
