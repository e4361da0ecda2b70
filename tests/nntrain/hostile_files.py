"""Files no pickler or ``numpy.savez`` writes: pickles assembled opcode by opcode, ``.npz``
archives with hand-made ``.npy`` members, and the loads that run them in a child process."""

import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from test_train_trainer import make_trainer

import nnlayers.reference as reference
from _subprocess_helpers import child_env
from nntrain import MultiLayerNet
from nntrain._io import load_file


class Ops:
    """A pickle written opcode by opcode: ``Ops().int(1).int(2).tuple(2).stop()``."""

    def __init__(self, protocol=2):
        self.parts = [pickle.PROTO + bytes([protocol])]

    def raw(self, data):
        self.parts.append(data)
        return self

    def stop(self):
        """The pickle's bytes, ended by STOP."""
        return b"".join(self.parts) + pickle.STOP

    # -- values
    def global_(self, module, name):
        return self.raw(pickle.GLOBAL + f"{module}\n{name}\n".encode())

    def int(self, value):
        if 0 <= value < 256:
            return self.raw(pickle.BININT1 + bytes([value]))
        if -(2**31) <= value < 2**31:
            return self.raw(pickle.BININT + struct.pack("<i", value))
        data = pickle.encode_long(value)
        return self.raw(pickle.LONG4 + struct.pack("<i", len(data)) + data)

    def float(self, value):
        return self.raw(pickle.BINFLOAT + struct.pack(">d", value))

    def bytes(self, data):
        return self.raw(pickle.BINBYTES + struct.pack("<I", len(data)) + data)

    def bytearray(self, data):
        return self.raw(pickle.BYTEARRAY8 + struct.pack("<Q", len(data)) + data)

    def str(self, text):
        data = text.encode("utf-8", "surrogatepass")
        return self.raw(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)

    def none(self):
        return self.raw(pickle.NONE)

    def bool(self, value):
        return self.raw(pickle.NEWTRUE if value else pickle.NEWFALSE)

    # -- containers and calls
    def mark(self):
        return self.raw(pickle.MARK)

    def tuple(self, n=None):
        """TUPLE1/2/3 of the top ``n`` items, or TUPLE of everything since the mark."""
        codes = {0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}
        return self.raw(pickle.TUPLE if n is None else codes[n])

    def empty_list(self):
        return self.raw(pickle.EMPTY_LIST)

    def empty_dict(self):
        return self.raw(pickle.EMPTY_DICT)

    def appends(self):
        return self.raw(pickle.APPENDS)

    def setitems(self):
        return self.raw(pickle.SETITEMS)

    def setitem(self):
        return self.raw(pickle.SETITEM)

    def reduce(self):
        return self.raw(pickle.REDUCE)

    def build(self):
        return self.raw(pickle.BUILD)

    def put(self, index):
        if index < 256:
            return self.raw(pickle.BINPUT + bytes([index]))
        return self.raw(pickle.LONG_BINPUT + struct.pack("<I", index))

    def get(self, index):
        if index < 256:
            return self.raw(pickle.BINGET + bytes([index]))
        return self.raw(pickle.LONG_BINGET + struct.pack("<I", index))

    def pop(self):
        return self.raw(pickle.POP)

    # -- NumPy's forms
    def dtype(self, spec="f8", byteorder="<", subarray=None, flags=0):
        """``numpy.dtype(spec)`` and its state; ``subarray=(spec, shape)`` grafts one on."""
        self.global_("numpy", "dtype").str(spec).bool(False).bool(True).tuple(3).reduce()
        self.mark().int(3).str(byteorder)
        if subarray is None:
            self.none()
        else:
            self.dtype(subarray[0]).int(subarray[1]).tuple(1).tuple(2)
        return self.none().none().int(-1).int(-1).int(flags).tuple().build()

    def reconstruct(self, dtype_code=b"b", shape=(0,)):
        """``_reconstruct(ndarray, shape, dtype_code)``, before its state."""
        self.global_("numpy.core.multiarray", "_reconstruct").global_("numpy", "ndarray")
        for n in shape:
            self.int(n)
        return self.tuple(len(shape)).bytes(dtype_code).tuple(3).reduce()

    def array_state(self, shape, data, spec="f8", byteorder="<", fortran=False):
        """The state tuple an ndarray's BUILD takes (without the BUILD)."""
        self.mark().int(1)
        for n in shape:
            self.int(n)
        self.tuple(len(shape)).dtype(spec, byteorder).bool(fortran).bytes(data)
        return self.tuple()

    def array(self, values, protocol5=False):
        """``values`` (an ndarray) as NumPy pickles it: ``_reconstruct`` + BUILD, or
        ``_frombuffer`` as protocol 5 does."""
        values = np.ascontiguousarray(values)
        spec, byteorder = values.dtype.str[1:], values.dtype.str[0]
        if protocol5:
            self.global_("numpy.core.numeric", "_frombuffer").mark()
            self.bytearray(values.tobytes()).dtype(spec, byteorder)
            for n in values.shape:
                self.int(n)
            return self.tuple(len(values.shape)).str("C").tuple().reduce()
        self.reconstruct()
        return self.array_state(values.shape, values.tobytes(), spec, byteorder).build()


def write(path, data):
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- .npz
def npy_bytes(header, data=b"", version=(1, 0)):
    """A ``.npy`` member: magic, ``header`` (a dict, written with repr, or a str), data."""
    text = header if isinstance(header, str) else repr(header)
    text += " " * ((-len(text) - 11) % 64) + "\n"
    size = struct.pack("<H" if version == (1, 0) else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + size + text.encode("latin1") + data


def npy_of(array):
    array = np.asarray(array)
    header = {"descr": array.dtype.str, "fortran_order": False, "shape": array.shape}
    return npy_bytes(header, array.tobytes())


def write_npz(path, members, compression=zipfile.ZIP_STORED):
    """An archive of ``{name: bytes or ndarray}`` members (``.npy`` added to the names)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, member in members.items():
            archive.writestr(name + ".npy", member if isinstance(member, bytes) else npy_of(member))
    return path


def write_npz_with_zeros(path, members, name, nbytes):
    """``members`` plus a deflated member ``name`` of ``nbytes`` zero bytes, written in chunks."""
    write_npz(path, members)
    header = {"descr": "|u1", "fortran_order": False, "shape": (nbytes,)}
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name + ".npy", "w", force_zip64=True) as member:
            member.write(npy_bytes(header))
            for start in range(0, nbytes, len(chunk)):
                member.write(chunk[: nbytes - start])
    return path


# ---------------------------------------------------------------- loads in a child
HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time, tracemalloc
import hostile_files

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

def chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__

cases = json.loads(sys.stdin.read())
limit = max(case["budget"] for case in cases) + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + limit, resource.RLIM_INFINITY))
for case in cases:
    print(json.dumps({"start": case["name"]}), flush=True)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        value = getattr(hostile_files, case.get("call", sys.argv[1]))(case)
    except BaseException as exc:
        outcome = {
            "exception": type(exc).__name__,
            "message": str(exc)[:2000],
            "memory_error": any(isinstance(e, (MemoryError, RecursionError)) for e in chain(exc)),
        }
        value = None
    else:
        outcome = {"exception": None, "result": value}
    outcome["peak"] = tracemalloc.get_traced_memory()[1]
    outcome["seconds"] = time.perf_counter() - start
    tracemalloc.stop()
    del value
    print(json.dumps({"name": case["name"], **outcome}), flush=True)
"""


def run_loads(cases, call, margin=64 << 20, timeout=120):
    """Run ``call(case)`` (a function of this module, by name; a case's ``call`` overrides
    it) for each case dict (``name``, ``path``, ``budget`` and what ``call`` reads) in one
    child whose address
    space is limited to its size after imports plus the largest budget plus ``margin``;
    return ``(outcomes by name, CompletedProcess)``.

    Each outcome has ``exception`` (a name or None), ``message``, ``memory_error`` (a
    MemoryError or RecursionError anywhere in the exception's chain), ``result`` (what
    ``call`` returned), ``peak`` (tracemalloc's peak in bytes) and ``seconds``. A case
    that killed the child has no outcome; ``result.last_started`` names it.
    """
    path = os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", CHILD, call, str(margin)],
        input=json.dumps(cases),
        env=child_env({"PYTHONPATH": path}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    outcomes, started = {}, None
    for line in result.stdout.splitlines():
        record = json.loads(line)
        if "start" in record:
            started = record["start"]
        else:
            outcomes[record["name"]] = record
    result.last_started = started
    return outcomes, result


def describe_child(result):
    return (
        f"returncode={result.returncode} (last case started: {result.last_started})\n"
        f"--- stderr ---\n{result.stderr[-3000:]}"
    )


def assert_refused(outcome, pattern, budget, seconds=10):
    """The outcome of one case: a LoadError matching ``pattern``, with no MemoryError or
    RecursionError behind it, within ``budget`` bytes (tracemalloc) and ``seconds``."""
    assert outcome is not None, "the child died"
    assert outcome["exception"] == "LoadError", outcome
    assert not outcome["memory_error"], outcome
    assert re.search(pattern, outcome["message"]), outcome["message"]
    assert outcome["peak"] <= budget, (outcome["peak"], budget)
    assert outcome["seconds"] < seconds, outcome


# -- what the child calls; nothing is imported after the address space is limited
def small_net(dtype=np.float64):
    """The network of the NumPy 1.x fixtures: W1 (4, 3), b1 (3,), W2 (3, 2), b2 (2,)."""
    return MultiLayerNet(4, [3], 2, layers=reference, dtype=dtype, rng=0)


small_net()  # imports the layers' modules now


def load_params(case):
    """``small_net().load_params(path, **options)``; returns the parameters as lists."""
    net = small_net()
    net.load_params(case["path"], **case.get("options", {}))
    return {key: value.tolist() for key, value in net.params.items()}


def load_any(case):
    """``load_file(path)``; returns a short repr."""
    return repr(load_file(case["path"]))[:200]


def resume(case):
    """A trainer resuming from the checkpoint ``path``."""
    trainer = make_trainer(epochs=2, extend=True, rng=0, checkpoint_path=case["path"], resume=True)
    return trainer.current_iter


# -- the fuzz test's oracle: a load that succeeds must give what trusted loaders give
SKELETON = "__nntrain_skeleton__"


def reference_npz(path):
    """The object a ``.npz`` file holds, read with ``np.load`` (the skeleton decoded)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if SKELETON not in arrays:
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

    return decode(json.loads(str(arrays[SKELETON])))


def reference_load(path):
    if path.endswith(".npz"):
        return reference_npz(path)
    with open(path, "rb") as f:
        return pickle.load(f)


def assert_same(a, b, where="top"):
    """``a`` and ``b`` are the same values of the same types, arrays to the byte."""
    if isinstance(b, (np.ndarray, np.generic)):
        assert type(a) is type(b), (where, type(a), type(b))
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
        if isinstance(b, np.ndarray) and b.ndim > 1:
            assert a.flags.f_contiguous == b.flags.f_contiguous, where
        return
    if isinstance(b, dict):
        assert type(a) is dict and list(a) == list(b), (where, a, b)
        for key in b:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
        return
    if isinstance(b, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
        return
    assert type(a) is type(b), (where, a, b)
    assert a == b or (a != a and b != b), (where, a, b)


def fuzz_check(case):
    """Load ``path`` as the case's kind says; if it loads, compare with the oracle."""
    path = case["path"]
    if case["kind"] == "params":
        net = small_net()
        net.load_params(path)
        expected = reference_load(path)
        assert set(expected) == set(net.params), sorted(expected)
        for key, value in net.params.items():
            want = np.asarray(expected[key]).astype(value.dtype)
            assert np.array_equal(value, want, equal_nan=True), key
        return "loaded params"
    assert_same(load_file(path), reference_load(path))
    return "loaded"
