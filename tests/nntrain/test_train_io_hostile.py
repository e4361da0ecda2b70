"""Hostile weights and checkpoint files: memory safety, memory budgets, clear errors.

Each class of attack is built here (``hostile_files.Ops`` writes pickles opcode by opcode).
Loads that could crash or exhaust memory run in a child process whose address space is
limited (``hostile_files.run_loads``); each must end in a ``LoadError`` with no
MemoryError or RecursionError behind it, within the load's budget as tracemalloc measures
it: three times the network's parameters at 8 bytes each plus 1 MiB for ``load_params``,
16 times the file's size plus 1 MiB for a load without expectations.
"""

import os
import pickle
import re
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest
from hostile_files import (
    Ops,
    assert_refused,
    describe_child,
    npy_bytes,
    run_loads,
    small_net,
    write,
    write_npz,
    write_npz_with_zeros,
)
from test_train_io import assert_trainer_unchanged, dump, trainer_state
from test_train_trainer import make_trainer

import nnlayers.reference as reference
from nntrain import Adam, LoadError, MultiLayerNet, cli
from nntrain._io import load_file

MIB = 1 << 20
#: small_net().load_params's budget: its 23 parameters
PARAMS_BUDGET = 3 * 8 * 23 + MIB


def file_budget(path):
    return 16 * os.path.getsize(path) + MIB


def params_file(path, hostile, key="W1"):
    """small_net's parameters pickled, with ``hostile(ops)`` writing the value of ``key``."""
    ops = Ops().empty_dict()
    for name, value in small_net().params.items():
        ops.str(name)
        if name == key:
            hostile(ops)
        else:
            ops.array(value)
        ops.setitem()
    return write(path, ops.stop())


def run_refused(cases, call, pattern):
    """Run ``cases`` (``{name: (path, budget[, call])}``) in one child; each must be
    refused."""
    records = [
        {"name": name, "path": str(path), "budget": budget, "call": (rest or [call])[0]}
        for name, (path, budget, *rest) in cases.items()
    ]
    outcomes, result = run_loads(records, call)
    assert result.returncode == 0, describe_child(result)
    for record in records:
        assert_refused(outcomes.get(record["name"]), pattern, record["budget"])
    return outcomes


# ---------------------------------------------------------------- memory safety
def grafted_dtype(ops):
    """A float dtype whose state grafts on a subarray of 10**6 floats (itemsize still 8)."""
    return ops.dtype("f8", subarray=("f8", 10**6))


GRAFTED = {
    "_frombuffer": lambda ops: (
        grafted_dtype(ops.global_("numpy.core.numeric", "_frombuffer").mark().bytes(bytes(8)))
        .int(10**6)
        .tuple(1)
        .str("C")
        .tuple()
        .reduce()
    ),
    "_reconstruct": lambda ops: (
        grafted_dtype(ops.reconstruct().mark().int(1).int(1).tuple(1))
        .bool(False)
        .bytes(bytes(8))
        .tuple()
        .build()
    ),
    "scalar": lambda ops: (
        grafted_dtype(ops.global_("numpy.core.multiarray", "scalar"))
        .bytes(bytes(8))
        .tuple(2)
        .reduce()
    ),
}


def test_a_dtype_state_grafting_a_subarray_is_refused(tmp_path):
    """Out-of-bounds reads: an array far larger than the bytes the file gives."""
    cases = {
        name: (params_file(tmp_path / f"{name}.pkl", hostile), PARAMS_BUDGET)
        for name, hostile in GRAFTED.items()
    }
    run_refused(cases, "load_params", "refused the state of NumPy dtype 'f8'")


def test_a_view_of_an_earlier_array_and_a_second_state_are_refused(tmp_path):
    """Use after free: a view over an array the file made, whose state is then rewritten."""

    def view_then_rewrite(ops):
        ops.reconstruct().put(0).array_state((4, 3), np.ones(12).tobytes()).build().pop()
        ops.global_("numpy.core.numeric", "_frombuffer").mark().get(0).dtype("f8")
        ops.int(4).int(3).tuple(2).str("C").tuple().reduce()
        ops.get(0).array_state((1,), bytes(8)).build().pop()

    def rewrite(ops):
        ops.reconstruct().array_state((4, 3), np.ones(12).tobytes()).build()
        ops.array_state((4, 3), np.zeros(12).tobytes()).build()

    cases = {
        "view": (params_file(tmp_path / "view.pkl", view_then_rewrite), PARAMS_BUDGET),
        "rewrite": (params_file(tmp_path / "rewrite.pkl", rewrite), PARAMS_BUDGET),
    }
    outcomes = run_refused(cases, "load_params", "refused|expected its data as bytes")
    assert "expected its data as bytes, found an array" in outcomes["view"]["message"]
    assert "refused to set the state of an array of shape" in outcomes["rewrite"]["message"]


@pytest.mark.parametrize(
    "case, hostile, message",
    [
        (
            "np.empty",
            lambda ops: (
                ops.global_("numpy.core.multiarray", "_reconstruct")
                .global_("numpy", "ndarray")
                .int(4)
                .int(3)
                .tuple(2)
                .dtype("f8")
                .tuple(3)
                .reduce()
            ),
            r"_reconstruct: expected the arguments \(ndarray, \(0,\), b'b'\)",
        ),
        (
            "no state",
            lambda ops: ops.reconstruct(),
            r"\['W1'\]: refused an array whose data the file never gives",
        ),
        (
            "used before its state",
            lambda ops: (
                ops.empty_list()
                .reconstruct()
                .put(7)
                .raw(pickle.APPEND)
                .get(7)
                .array_state((4, 3), bytes(96))
                .build()
                .pop()
            ),
            r"\['W1'\]\[0\]: refused a reference to an array taken before its state was set",
        ),
        (
            "dtype state twice",
            lambda ops: (
                ops.reconstruct()
                .mark()
                .int(1)
                .int(4)
                .int(3)
                .tuple(2)
                .dtype("f8")
                .mark()
                .int(3)
                .str(">")
                .none()
                .none()
                .none()
                .int(-1)
                .int(-1)
                .int(0)
                .tuple()
                .build()
                .bool(False)
                .bytes(bytes(96))
                .tuple()
                .build()
            ),
            "refused to set the state of a NumPy dtype twice",
        ),
    ],
    ids=["np.empty", "no state", "used before its state", "dtype state twice"],
)
def test_every_array_takes_its_state_exactly_once(tmp_path, case, hostile, message):
    """Uninitialised memory and rewritten states: no array without its own bytes."""
    net = small_net()
    before = {key: value.copy() for key, value in net.params.items()}
    path = params_file(tmp_path / "w.pkl", hostile)
    with pytest.raises(LoadError, match=message):
        net.load_params(path)
    for key, value in before.items():
        np.testing.assert_array_equal(net.params[key], value)


# ---------------------------------------------------------------- memory budgets
def deep_list_bytes(depth):
    """Opcodes of a list in a list in ... ``depth`` deep (no pickler writes it)."""
    return pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1)


def nested_references(ops, levels, width, leaf):
    """A list of ``width`` references to a list of ... (``levels`` deep) to ``leaf``."""
    leaf(ops.empty_list().mark())
    ops.appends().put(0)
    for level in range(1, levels):
        ops.pop().empty_list().mark()
        for _ in range(width):
            ops.get(level - 1)
        ops.appends().put(level)


def test_shared_references_are_counted_before_conversion(tmp_path):
    """A few hundred bytes of shared references that NumPy would expand to 10**8 floats,
    and 200 references to one 256 KiB array (50 MiB once stacked)."""

    def floats(ops):
        for _ in range(10):
            ops.float(0.5)

    def bomb(ops):
        nested_references(ops, 8, 10, floats)

    def shaped_bomb(ops):  # (4, 3) on the outside, lists of 10**6 floats inside
        nested_references(ops, 6, 10, floats)
        ops.pop().empty_list().mark()
        for _ in range(4):
            ops.empty_list().mark().get(5).get(5).get(5).appends()
        ops.appends()

    def stacked(ops):
        ops.array(np.ones(32768)).put(99).pop().empty_list().mark()
        for _ in range(200):
            ops.get(99)
        ops.appends()

    cases = {
        name: (params_file(tmp_path / f"{name}.pkl", hostile), PARAMS_BUDGET)
        for name, hostile in [("bomb", bomb), ("shaped", shaped_bomb), ("stacked", stacked)]
    }
    assert os.path.getsize(cases["bomb"][0]) < 1000
    run_refused(cases, "load_params", r"'W1': expected (shape \(4, 3\)|numbers), found")


def test_allocations_the_file_declares_are_bounded_before_they_are_made(tmp_path):
    """A 70-byte pickle asking for 400 MB of object array, a bytes object declared 2**40
    long, 200 arrays copied from one 512 KiB bytes object, 300000 memo entries."""
    object_array = (
        Ops()
        .global_("numpy.core.multiarray", "_reconstruct")
        .global_("numpy", "ndarray")
        .int(50_000_000)
        .tuple(1)
        .str("O")
        .tuple(3)
        .reduce()
        .stop()
    )
    assert len(object_array) < 100
    declared = Ops().raw(pickle.BINBYTES8 + (2**40).to_bytes(8, "little") + bytes(16)).stop()
    copies = Ops().bytes(bytes(1 << 19)).put(0).pop().empty_list().mark()
    for _ in range(200):
        copies.global_("numpy.core.numeric", "_frombuffer").mark().get(0).dtype("f8")
        copies.int(65536).tuple(1).str("C").tuple().reduce()
    copies = copies.appends().stop()
    memo = Ops().none().raw(pickle.MEMOIZE * 300_000).stop()
    cases = {}
    for name, data in [
        ("object", object_array),
        ("declared", declared),
        ("copies", copies),
        ("memo", memo),
    ]:
        path = write(tmp_path / f"{name}.pkl", data)
        cases[name] = (path, file_budget(path))
    outcomes = run_refused(cases, "load_any", ".")
    assert "expected the arguments (ndarray, (0,), b'b')" in outcomes["object"]["message"]
    assert "not a pickle file, or a truncated one" in outcomes["declared"]["message"]
    for name in ("copies", "memo"):
        assert "would take more memory than loading this file may" in outcomes[name]["message"]


def test_npz_reads_only_expected_members_and_checks_headers_first(tmp_path):
    """A 64 MiB extra member compressed to 64 KiB is never decompressed; a member whose
    header declares 10**12 values is refused before anything is allocated."""
    params = small_net().params
    junk = write_npz_with_zeros(tmp_path / "junk.npz", params, "junk", 64 << 20)
    assert os.path.getsize(junk) < 1 << 20
    huge = {
        **params,
        "W1": npy_bytes(
            {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}, bytes(96)
        ),
    }
    huge = write_npz(tmp_path / "huge.npz", huge)
    records = [
        {"name": "junk", "path": str(junk), "budget": PARAMS_BUDGET},
        {"name": "huge", "path": str(huge), "budget": PARAMS_BUDGET},
        {
            "name": "lenient",
            "path": str(junk),
            "budget": PARAMS_BUDGET,
            "options": {"strict": False},
        },
    ]
    outcomes, result = run_loads(records, "load_params")
    assert result.returncode == 0, describe_child(result)
    assert_refused(outcomes["junk"], r"unexpected \['junk'\]", PARAMS_BUDGET)
    assert_refused(outcomes["huge"], "member 'W1'.*would take more memory", PARAMS_BUDGET)
    lenient = outcomes["lenient"]
    assert lenient["exception"] is None and lenient["peak"] <= PARAMS_BUDGET, lenient
    np.testing.assert_array_equal(lenient["result"]["W1"], params["W1"])


def test_deep_nesting_is_refused(tmp_path):
    """100000-deep lists, as a parameter, in a plain load and in a .npz skeleton."""

    def deep(ops):
        ops.raw(deep_list_bytes(100_000))

    params = params_file(tmp_path / "deep.pkl", deep)
    plain = write(tmp_path / "plain.pkl", Ops().raw(deep_list_bytes(100_000)).stop())
    skeleton = {"__nntrain_skeleton__": np.array("[" * 100_000 + "]" * 100_000)}
    skeleton = write_npz(tmp_path / "deep.npz", skeleton)
    cases = {
        "params": (params, PARAMS_BUDGET),
        "plain": (plain, file_budget(plain), "load_any"),
        "skeleton": (skeleton, file_budget(skeleton), "load_any"),
    }
    deeper = "nested deeper than 32|would take more memory than loading this file may|not JSON"
    run_refused(cases, "load_params", deeper)


def test_a_real_network_loads_within_its_budget(tmp_path):
    """The budgets leave room for the files they are for."""
    net = MultiLayerNet(784, [100, 100], 10, layers=reference, rng=1)
    count = sum(value.size for value in net.params.values())
    budget = 3 * 8 * count + MIB
    for protocol in (2, 5):
        for suffix in (".pkl", ".npz"):
            path = tmp_path / f"p{protocol}{suffix}"
            if suffix == ".pkl":
                dump({k: v.copy() for k, v in net.params.items()}, path, protocol)
            else:
                net.save_params(path)
            other = MultiLayerNet(784, [100, 100], 10, layers=reference, rng=2)
            tracemalloc.start()
            try:
                other.load_params(path)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak <= budget, (path.name, peak, budget)
            np.testing.assert_array_equal(other.params["W1"], net.params["W1"])


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_a_checkpoint_loads_within_its_budget(tmp_path, suffix):
    path = tmp_path / f"ckpt{suffix}"
    make_trainer(epochs=2, extend=True, rng=0, checkpoint_path=path).train()
    trainer = make_trainer(epochs=3, extend=True, rng=0)
    budget = trainer.checkpoint_budget().limit
    tracemalloc.start()
    try:
        trainer.load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert trainer.current_epoch == 2 and peak <= budget, (peak, budget)


# ---------------------------------------------------------------- what loads, exactly
def plain_values():
    values = {}
    for code in ("?", "i1", "u1", "<i2", ">u4", "<i8", ">f2", "<f4", ">f8", "<c8", ">c16"):
        array = np.arange(24).reshape(2, 3, 4).astype(code)
        values[code] = array
        values[code + " F"] = np.asfortranarray(array)
        values[code + " strided"] = array[:, ::2, 1:]
        values[code + " 0-d"] = np.array(array.flat[5])
        values[code + " empty"] = array[:0]
        values[code + " scalar"] = array.flat[7]
    return values


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_arrays_and_scalars_of_every_plain_dtype_load_as_numpy_loads_them(tmp_path, protocol):
    values = {**plain_values(), "ordered": OrderedDict(a=np.float32(1))}
    path = dump(values, tmp_path / "v.pkl", protocol)
    expected = pickle.loads(path.read_bytes())
    loaded = load_file(path)
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        got = loaded[key]
        if isinstance(value, (np.ndarray, np.generic)):
            assert type(got) is type(value) and got.dtype == value.dtype, key
            assert got.shape == value.shape and got.tobytes() == value.tobytes(), key
        if isinstance(value, np.ndarray):
            assert got.flags.f_contiguous == value.flags.f_contiguous, key
            assert got.base is None and got.flags.writeable, key  # owns a copy


def test_a_pickled_dtype_is_refused(tmp_path):
    """The README says what loads: dtypes only as those of arrays and scalars."""
    path = dump({"dtype": np.dtype("f8")}, tmp_path / "dtype.pkl")
    with pytest.raises(LoadError, match=r"\['dtype'\]: refused a NumPy dtype"):
        load_file(path)


# ---------------------------------------------------------------- clear errors
SPECIAL_PATHS = ("directory", "symlink loop", "dangling symlink", "fifo")


def special_path(tmp_path, kind):
    path = tmp_path / kind.replace(" ", "_")
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink loop":
        path.symlink_to(path)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "missing")
    else:
        os.mkfifo(path)
    return path


def test_paths_that_are_not_regular_files_are_load_errors(tmp_path):
    """Directories, symbolic link loops, dangling links and FIFOs (whose open would wait
    for a writer) as weights and as a checkpoint to resume."""
    records = []
    for kind in SPECIAL_PATHS:
        path = special_path(tmp_path, kind)
        for call in ("load_params", "resume"):
            records.append(
                {"name": f"{call} {kind}", "path": str(path), "budget": 64 * MIB, "call": call}
            )
    outcomes, result = run_loads(records, "load_params", timeout=60)
    assert result.returncode == 0, describe_child(result)
    for record in records:
        assert_refused(
            outcomes.get(record["name"]),
            rf"^{re.escape(record['path'])}: (is a directory|cannot be opened: Too many levels"
            r"|a symbolic link to a missing file|is not a regular file)",
            64 * MIB,
        )


def checkpoint_field_corruptions():
    """``{case: (change(state) -> raw replacement or None, message)}``."""

    def setter(key, value):
        def change(state):
            state[key] = value

        return change

    def nested(*keys, value):
        def change(state):
            target = state
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value

        return change

    def adam(name, value):
        return nested("optimizer_state", name, value=value)

    return {
        "version array": (setter("version", np.array([1])), r"version is an array of shape"),
        "version str": (setter("version", "1"), "not a trainer checkpoint"),
        "unknown field": (setter("extra", 1), r"unknown fields \['extra'\]"),
        "train_size array": (setter("train_size", np.arange(3)), "train_size is an array"),
        "optimizer_class list": (setter("optimizer_class", ["Adam"]), "optimizer_class is a list"),
        "10**400 steps": (setter("current_iter", 10**400), "current_iter: .* an int of 1329 bits"),
        "negative epoch": (setter("current_epoch", -1), "current_epoch: expected a non-negative"),
        "epochs inconsistent": (setter("current_epoch", 0), "current_epoch is 0 but current_iter"),
        "short history": (
            nested("train_loss_list", value=[0.5]),
            r"train_loss_list: expected a list of 5",
        ),
        "infinite accuracy": (
            nested("test_acc_list", 0, value=np.inf),
            r"test_acc_list\[0\]: expected a finite",
        ),
        "negative time": (nested("epoch_times", 0, value=-1.0), r"epoch_times\[0\]: .* >= 0"),
        "NaN loss": (
            nested("train_loss_list", 1, value=np.nan),
            r"train_loss_list\[1\]: expected a finite",
        ),
        "huge int loss": (
            nested("train_loss_list", 1, value=10**400),
            r"train_loss_list\[1\]: expected a finite",
        ),
        "Adam iter -1": (adam("iter", -1), "optimizer_state: iter: expected a non-negative int64"),
        "Adam iter 10**400": (adam("iter", 10**400), "iter: .*an int of 1329 bits"),
        "Adam iter bool": (adam("iter", True), "iter: expected a non-negative int64"),
        "Adam m without v": (adam("v", None), "optimizer_state: m, v: all None or all set"),
        "Adam negative v": (
            lambda state: state["optimizer_state"]["v"]["W1"].__setitem__((0, 0), -1.0),
            "optimizer_state: v 'W1': a sum of squares with negative values",
        ),
        "Adam unknown": (adam("lr", 1.0), r"optimizer_state: state: expected \['iter', 'm', 'v'\]"),
        "MT19937 pos": (
            lambda state: state.__setitem__(
                "global_rng_state",
                state["global_rng_state"][:2] + (100_000,) + state["global_rng_state"][3:],
            ),
            r"global_rng_state\[2\]: expected an int from 0 to 624",
        ),
        "PCG64 state 2**200": (
            nested("batch_rng_state", "state", "state", value=2**200),
            r"batch_rng_state\['state'\]\['state'\]: expected an int from 0",
        ),
        "other bit generator": (
            nested("batch_rng_state", "bit_generator", value="MT19937"),
            r"batch_rng_state\['bit_generator'\]: expected 'PCG64'",
        ),
        "deep params": (
            lambda state: deep_list_bytes(100_000),
            "nested deeper than 32|would take more memory than loading this file may",
        ),
    }


@pytest.mark.parametrize("case", sorted(checkpoint_field_corruptions()))
def test_checkpoint_fields_are_type_and_range_checked(tmp_path, case):
    change, message = checkpoint_field_corruptions()[case]
    path = tmp_path / "ckpt.pkl"
    make_trainer(epochs=1, extend=True, rng=0, checkpoint_path=path).train()
    state = load_file(path)
    raw = change(state)
    if raw is None:
        dump(state, path)
    else:  # a value no pickler writes, in place of the parameters
        state["params"] = "PLACEHOLDER"
        data = pickle.dumps(state, protocol=4)
        placeholder = pickle.SHORT_BINUNICODE + b"\x0bPLACEHOLDER"
        assert data.count(placeholder) == 1
        path.write_bytes(data.replace(placeholder, raw))
    trainer = make_trainer(epochs=2, extend=True, net_seed=5, rng=1)
    for _ in range(3):
        trainer.train_step()
    before = trainer_state(trainer)
    with pytest.raises(LoadError, match=message) as info:
        trainer.load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")
    assert_trainer_unchanged(trainer, before)


def test_a_nan_loss_is_accepted_from_a_diverged_run(tmp_path):
    path = tmp_path / "ckpt.pkl"
    make_trainer(epochs=1, rng=0, checkpoint_path=path).train()
    state = load_file(path)
    state["train_loss_list"][2] = np.nan
    dump(state, path)
    trainer = make_trainer(epochs=2, rng=0)
    trainer.load_checkpoint(path, allow_nonfinite=True)
    assert np.isnan(trainer.train_loss_list[2]) and trainer.current_epoch == 1


def test_adam_refuses_a_negative_step_count():
    adam = Adam()
    with pytest.raises(ValueError, match="iter: expected a non-negative int64 step count"):
        adam.load_state_dict({"m": None, "v": None, "iter": -1})
    assert adam.iter == 0


CONTROL_NAME = "w\n\x1b[31mnntrain: forged line\r.pkl"


def test_names_with_control_characters_are_printed_escaped(tmp_path):
    path = tmp_path / CONTROL_NAME
    path.write_bytes(b"not a pickle")
    with pytest.raises(LoadError) as info:
        small_net().load_params(path)
    message = str(info.value)
    assert message.isprintable() and "w\\n\\x1b[31mnntrain: forged line\\r.pkl" in message


CLI_ARGS = [
    *("--quiet", "--model", "mlp", "--layers", "reference"),
    *("--epochs", "1", "--digits-size", "8"),
]


@pytest.fixture(scope="module")
def cli_checkpoint_state(tmp_path_factory):
    """The state of a checkpoint the CLI wrote with ``CLI_ARGS``."""
    path = tmp_path_factory.mktemp("cli") / "good.pkl"
    cli.main(CLI_ARGS + ["--checkpoint", str(path)])
    return load_file(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("iter.pkl", "adam iter", "optimizer_state: iter: expected a non-negative int64"),
        ("version.pkl", "version", "not a trainer checkpoint"),
        (CONTROL_NAME, "garbage", "not a pickle file"),
        ("dir.pkl", "directory", "is a directory"),
    ],
    ids=["adam iter", "version", "control characters", "directory"],
)
def test_cli_prints_one_line_and_exits_2_for_a_bad_checkpoint(
    tmp_path, capsys, cli_checkpoint_state, name, content, message
):
    path = tmp_path / name
    state = pickle.loads(pickle.dumps(cli_checkpoint_state))
    if content == "adam iter":
        state["optimizer_state"]["iter"] = -1
        dump(state, path)
    elif content == "version":
        state["version"] = np.array([1])
        dump(state, path)
    elif content == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\x80\x05garbage")
    with pytest.raises(SystemExit) as info:
        cli.main(CLI_ARGS + ["--checkpoint", str(path), "--resume"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    line = err[:-1]
    assert line.isprintable(), line
    # a directory is refused with the other paths, before anything is loaded
    prefix = "--checkpoint " if content == "directory" else ""
    assert line.startswith(f"nntrain: error: {prefix}{tmp_path}/") and message in line, line
