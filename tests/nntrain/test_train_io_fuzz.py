"""Fuzzing the loader: valid pickles and ``.npz`` archives, mutated, loaded in a child.

Each base file is one the loader must read (the book's pickled parameters with every
protocol, NumPy 1.x's, a checkpoint-like tree, ``.npz`` archives stored and deflated,
flat and with a skeleton). Each case applies one to three mutations: bytes flipped,
opcodes inserted, removed or repeated, memo references duplicated; for archives, the zip's
bytes or a member's ``.npy`` bytes mutated (the member re-zipped with a valid CRC), a
member duplicated under another name. All cases of a test run in one child process whose
address space is limited to its size after imports plus the largest budget plus a margin,
and every outcome must be

* no signal (the child survives every case),
* ``LoadError`` (never another exception, never a MemoryError or RecursionError behind it),
  or the exact values the file describes (as trusted ``pickle.loads`` or ``np.load``
  read them),
* tracemalloc's peak during the load within the load's budget: for ``load_params`` three
  times the network's parameters at 8 bytes each plus 1 MiB, for ``load_file`` 16 times the
  file's size plus 1 MiB.
"""

import io
import pickle
import pickletools
import random
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hostile_files import describe_child, npy_of, run_loads

from nntrain._io import save_file

DATA = Path(__file__).parents[1] / "data"
MIB = 1 << 20
#: the fixtures' network, MultiLayerNet(4, [3], 2): W1 (4, 3), b1 (3,), W2 (3, 2), b2 (2,)
SHAPES = {"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,)}
PARAMS_BUDGET = 3 * 8 * 23 + MIB
FAST_CASES = 240
SLOW_CASES = 4000


def file_budget(size):
    return 16 * size + MIB


# ---------------------------------------------------------------- base files
def params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


def checkpoint_like():
    return {
        "version": 1,
        "params": params(),
        "losses": [0.5, 0.25, float("nan")],
        "counters": (3, 2**70, True, None),
        "rng": np.random.RandomState(0).get_state(),
        "gen": np.random.default_rng(1).bit_generator.state,
        "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.complex64(1 - 2j)],
        "odd": [np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(4, dtype=">i2")],
        "ordered": OrderedDict(a=1),
        "empty": np.zeros((0, 3)),
    }


def unframed(data):
    """``data`` without its FRAME opcodes (still a valid pickle of the same protocol)."""
    out, last = [], 0
    for opcode, _, pos in pickletools.genops(data):
        if opcode.name == "FRAME":
            out.append(data[last:pos])
            last = pos + 9
    out.append(data[last:])
    return b"".join(out)


def base_pickles():
    """``{name: (bytes, kind)}``; kind ``params`` is loaded into the fixtures' network."""
    bases = {}
    for protocol in (2, 3, 4, 5):
        for dtype in (np.float64, np.float32):
            data = pickle.dumps(params(dtype), protocol=protocol)
            bases[f"params-p{protocol}-{np.dtype(dtype)}"] = (data, "params")
        data = pickle.dumps(checkpoint_like(), protocol=protocol)
        bases[f"tree-p{protocol}"] = (data, "file")
    for protocol in (4, 5):
        data = bases[f"params-p{protocol}-float64"][0]
        bases[f"params-p{protocol}-unframed"] = (unframed(data), "params")
        bases[f"tree-p{protocol}-unframed"] = (unframed(bases[f"tree-p{protocol}"][0]), "file")
    for protocol in (2, 4):
        bases[f"numpy1-p{protocol}"] = (
            (DATA / f"numpy1_params_p{protocol}.pkl").read_bytes(),
            "params",
        )
    return bases


def npz_bytes(members, compression):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return buffer.getvalue()


def base_archives(tmp_path):
    """``{name: (members {name: .npy bytes}, compression, kind)}``."""
    flat = {key: npy_of(value) for key, value in params().items()}
    save_file(checkpoint_like(), tmp_path / "skeleton.npz")
    with zipfile.ZipFile(tmp_path / "skeleton.npz") as archive:
        skeleton = {name[:-4]: archive.read(name) for name in archive.namelist()}
    return {
        "npz-stored": (flat, zipfile.ZIP_STORED, "params"),
        "npz-deflated": (flat, zipfile.ZIP_DEFLATED, "params"),
        "npz-skeleton": (skeleton, zipfile.ZIP_STORED, "file"),
    }


# ---------------------------------------------------------------- mutations
SNIPPETS = [
    pickle.BUILD,
    pickle.REDUCE,
    pickle.DUP,
    pickle.POP,
    pickle.MARK,
    pickle.TUPLE,
    pickle.TUPLE1,
    pickle.TUPLE2,
    pickle.TUPLE3,
    pickle.EMPTY_LIST,
    pickle.EMPTY_DICT,
    pickle.EMPTY_TUPLE,
    pickle.APPEND,
    pickle.APPENDS,
    pickle.SETITEM,
    pickle.SETITEMS,
    pickle.MEMOIZE,
    pickle.NONE,
    pickle.NEWTRUE,
    pickle.STOP,
    pickle.BININT1 + b"\x00",
    pickle.BININT + struct.pack("<i", 2**30),
    pickle.BININT + struct.pack("<i", -1),
    pickle.LONG1 + b"\x09" + b"\xff" * 9,
    pickle.SHORT_BINBYTES + b"\x08" + b"\x00" * 8,
    pickle.BINBYTES8 + struct.pack("<Q", 2**40),
    pickle.BYTEARRAY8 + struct.pack("<Q", 2**40),
    pickle.SHORT_BINUNICODE + b"\x02f8",
    pickle.SHORT_BINUNICODE + b"\x02O8",
    pickle.SHORT_BINUNICODE + b"\x01F",
    pickle.EMPTY_SET,
    pickle.NEWOBJ,
]


def opcode_spans(data):
    try:
        ops = list(pickletools.genops(data))
    except ValueError:
        return [(0, len(data))]
    ends = [pos for _, _, pos in ops[1:]] + [len(data)]
    return [(pos, end) for (_, _, pos), end in zip(ops, ends)]


def memo_indices(data):
    indices, count = set(), 0
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "MEMOIZE":
            indices.add(count)
            count += 1
        elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            indices.add(arg)
    return sorted(indices) or [0]


def mutate_pickle(data, rng):
    if not data:
        return rng.choice(SNIPPETS), "insert"
    spans = opcode_spans(data)
    memo = memo_indices(data) if len(spans) > 1 else [0]
    kind = rng.choice(["flip", "insert", "remove", "repeat", "reference"])
    start, end = rng.choice(spans)
    if kind == "flip":
        at = rng.randrange(len(data))
        return data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :], kind
    if kind == "insert":
        snippet = rng.choice(
            SNIPPETS + [data[s:e] for s, e in rng.sample(spans, min(3, len(spans)))]
        )
        return data[:start] + snippet + data[start:], kind
    if kind == "remove":
        return data[:start] + data[end:], kind
    if kind == "repeat":
        return data[:end] + data[start:end] * rng.choice([1, 2, 50]) + data[end:], kind
    index = rng.choice(memo)
    get = pickle.LONG_BINGET + struct.pack("<I", index)
    follow = rng.choice([b"", pickle.APPEND, pickle.BUILD, pickle.TUPLE1, pickle.REDUCE])
    return data[:start] + (get + follow) * rng.choice([1, 3, 200]) + data[start:], kind


def mutate_npy(member, rng):
    kind = rng.choice(["flip", "insert", "remove", "header"])
    if kind == "header":
        header = member[10 : 10 + struct.unpack("<H", member[8:10])[0]]
        text = header.decode("latin1")
        swaps = [
            ("'<f8'", rng.choice(["'|O'", "'<f16'", "[('a', '<f8')]", "'<f4'", "'<U3'"])),
            ("'fortran_order': False", "'fortran_order': True"),
            ("(4, 3)", rng.choice(["(4, 4)", "(1000000000, 1000000000)", "(-1, 3)", "()"])),
            ("(3,)", rng.choice(["(2,)", "(3, 0)", "(12,)"])),
        ]
        old, new = rng.choice(swaps)
        text = text.replace(old, new)
        text = text.rstrip() + " " * max(len(header) - len(text.rstrip()) - 1, 0) + "\n"
        body = text.encode("latin1")
        return member[:8] + struct.pack("<H", len(body)) + body + member[10 + len(header) :], kind
    at = rng.randrange(max(len(member), 1))
    if kind == "flip" and member:
        return member[:at] + bytes([member[at] ^ rng.randrange(1, 256)]) + member[at + 1 :], kind
    if kind == "insert":
        return member[:at] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 8]))) + member[
            at:
        ], kind
    return member[:at] + member[at + rng.choice([1, 8]) :], kind


def mutate_archive(members, compression, rng):
    """``(zip bytes, what was done)``."""
    members = dict(members)
    kind = rng.choice(["member", "member", "duplicate", "zip"])
    if kind == "member":
        name = rng.choice(sorted(members))
        members[name], how = mutate_npy(members[name], rng)
        return npz_bytes(members, compression), f"member-{how}"
    if kind == "duplicate":
        name = rng.choice(sorted(members))
        members[name + "x"] = members[name]
        return npz_bytes(members, compression), kind
    data = npz_bytes(members, compression)
    at = rng.randrange(len(data))
    how = rng.choice(["flip", "truncate"])
    if how == "flip":
        return data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :], "zip-flip"
    return data[:at], "zip-truncate"


def make_cases(tmp_path, count, seed):
    rng = random.Random(seed)
    pickles, archives = base_pickles(), base_archives(tmp_path)
    cases = []
    for index in range(count):
        if index % 3 == 2:
            base = rng.choice(sorted(archives))
            members, compression, kind = archives[base]
            data, how = mutate_archive(members, compression, rng)
            suffix = ".npz"
        else:
            base = rng.choice(sorted(pickles))
            data, kind = pickles[base]
            how = []
            for _ in range(rng.choice([1, 1, 2, 3])):
                data, step = mutate_pickle(data, rng)
                how.append(step)
            how = "+".join(how)
            suffix = ".pkl"
        name = f"{seed}-{index}-{base}-{how}"
        path = tmp_path / f"case{index}{suffix}"
        path.write_bytes(data)
        budget = PARAMS_BUDGET if kind == "params" else file_budget(len(data))
        cases.append({"name": name, "path": str(path), "kind": kind, "budget": budget})
    return cases


def check_outcomes(cases, outcomes, result):
    assert result.returncode == 0, describe_child(result)
    failures = []
    for case in cases:
        outcome = outcomes.get(case["name"])
        if outcome is None:
            failures.append(f"{case['name']}: no outcome")
        elif outcome["exception"] not in (None, "LoadError") or outcome.get("memory_error"):
            failures.append(f"{case['name']}: {outcome['exception']}: {outcome['message']}")
        elif outcome["peak"] > case["budget"]:
            failures.append(f"{case['name']}: peak {outcome['peak']} > budget {case['budget']}")
    assert not failures, "\n".join(failures[:20])


def run_fuzz(tmp_path, count, seed):
    cases = make_cases(tmp_path, count, seed)
    outcomes, result = run_loads(cases, "fuzz_check", timeout=900)
    check_outcomes(cases, outcomes, result)
    return outcomes


def test_fuzz_loader_short(tmp_path):
    outcomes = run_fuzz(tmp_path, FAST_CASES, seed=1)
    loaded = sum(outcome["exception"] is None for outcome in outcomes.values())
    assert 0 < loaded < len(outcomes)  # both kinds of outcome occur


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_fuzz_loader_long(tmp_path, seed):
    run_fuzz(tmp_path, SLOW_CASES, seed)
