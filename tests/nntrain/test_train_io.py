"""Loading weights and checkpoints: restricted pickle, validation before assignment, .npz,
atomic saves and their temporary files."""

import builtins
import importlib
import os
import pickle
import runpy
import signal
import subprocess
import sys
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_train_trainer import make_trainer

import nnlayers.reference as reference
from _subprocess_helpers import child_env
from nntrain import LoadError, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet, cli
from nntrain._io import _host_tag, load_file

DATA = Path(__file__).parents[1] / "data"
numpy1_params_values = runpy.run_path(str(DATA / "make_numpy1_params.py"))["numpy1_params_values"]


def small_net(dtype=np.float64, rng=0):
    """The network of the NumPy 1.x fixtures: W1 (4, 3), b1 (3,), W2 (3, 2), b2 (2,)."""
    return MultiLayerNet(4, [3], 2, layers=reference, dtype=dtype, rng=rng)


def dump(obj, path, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def snapshot(net):
    return {key: value.copy() for key, value in net.params.items()}


def assert_unchanged(net, before):
    assert set(net.params) == set(before)
    for key, value in before.items():
        np.testing.assert_array_equal(net.params[key], value)
        assert net.params[key].dtype == value.dtype


# ---------------------------------------------------------------- the book's format
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_book_format_round_trips_with_every_protocol(tmp_path, protocol, dtype):
    source = small_net(dtype, rng=1)
    path = dump({k: v.copy() for k, v in source.params.items()}, tmp_path / "p.pkl", protocol)
    net = small_net(dtype, rng=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.load_params(path)
    assert_unchanged(net, source.params)
    assert net.layers["Affine1"].W is net.params["W1"]


@pytest.mark.parametrize("protocol, stored", [(2, np.float64), (4, np.float32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy1_fixture_loads_without_warnings(protocol, stored, dtype):
    net = small_net(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning from the numpy.core shim
        net.load_params(DATA / f"numpy1_params_p{protocol}.pkl")
    for key, value in numpy1_params_values(stored).items():
        np.testing.assert_array_equal(net.params[key], value.astype(dtype))


def test_checkpoint_data_round_trips_restricted(tmp_path):
    state = {
        "rng": np.random.RandomState(3).get_state(),
        "gen": np.random.default_rng(3).bit_generator.state,
        "n": np.int64(7),
        "x": [1.5, None, "s", (True, 2**100)],
        "a": np.arange(6, dtype=np.uint32)[::2],
    }
    for protocol in (2, 3, 4, 5):
        loaded = load_file(dump(state, tmp_path / "s.pkl", protocol))
        assert loaded["gen"] == state["gen"] and loaded["x"] == state["x"]
        assert loaded["n"] == 7 and type(loaded["n"]) is np.int64
        np.testing.assert_array_equal(loaded["rng"][1], state["rng"][1])
        np.testing.assert_array_equal(loaded["a"], [0, 2, 4])


# ---------------------------------------------------------------- malicious pickles
class Reduces:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def malicious_payloads(marker):
    return {
        "posix.system": Reduces(os.system, f"touch {marker}"),
        "builtins.eval": Reduces(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": Reduces(subprocess.Popen, ["touch", str(marker)]),
        "importlib.import_module": Reduces(importlib.import_module, "antigravity"),
        "numpy.save": Reduces(np.save, str(marker), np.zeros(1)),
        "numpy.load": Reduces(np.load, str(marker)),
    }


@pytest.mark.parametrize("name", sorted(malicious_payloads("m")))
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickles_are_refused_before_running(tmp_path, name, protocol):
    marker = tmp_path / "marker"
    net = small_net()
    before = snapshot(net)
    params = {k: v.copy() for k, v in net.params.items()}
    params["W1"] = malicious_payloads(marker)[name]
    path = dump(params, tmp_path / "evil.pkl", protocol)
    # protocol 2 writes Python 2's module names (__builtin__, commands)
    pattern = rf"{path}: refused to load global [\w.]+\.{name.rsplit('.', 1)[1]}:"
    with pytest.raises(LoadError, match=pattern):
        net.load_params(path)
    assert not marker.exists()
    assert_unchanged(net, before)
    assert "antigravity" not in sys.modules


def test_object_arrays_are_refused(tmp_path):
    marker = tmp_path / "marker"
    path = dump(
        {"W1": np.array([None, Reduces(os.system, f"touch {marker}")], dtype=object)},
        tmp_path / "obj.pkl",
        2,
    )
    with pytest.raises(LoadError, match="refused"):
        load_file(path)
    assert not marker.exists()
    with pytest.raises(LoadError, match="refused NumPy dtype 'O8'"):
        load_file(dump({"W1": np.array([None, None])}, tmp_path / "none.pkl"))


def test_a_dtype_state_setting_the_object_flag_is_refused(tmp_path):
    raw = pickle.dumps(np.array([None]), protocol=2)
    assert raw.count(b"O8") == 1
    path = tmp_path / "flag.pkl"
    path.write_bytes(raw.replace(b"O8", b"f8"))  # a float dtype whose state says "object"
    with pytest.raises(LoadError, match="refused the state of NumPy dtype 'f8'"):
        load_file(path)


@pytest.mark.parametrize(
    "make",
    [lambda: np.matrix([[1.0]]), lambda: {1, 2}, lambda: Fraction(1, 3)],
    ids=["matrix", "set", "Fraction"],
)
def test_other_objects_are_refused_and_trusted_loads_them(tmp_path, make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
        obj = make()
    path = dump(obj, tmp_path / "obj.pkl")
    with pytest.raises(LoadError, match=f"{path}: refused"):
        load_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
        assert type(load_file(path, trusted=True)) is type(obj)


class ParamsDict(dict):
    """A class the restricted loader refuses (it is not one of the accepted types)."""


def test_trusted_load_params_accepts_a_plain_pickle(tmp_path):
    source = small_net(rng=1)
    path = dump(ParamsDict(source.params), tmp_path / "params.pkl")
    net = small_net(rng=2)
    with pytest.raises(LoadError, match="test_train_io.ParamsDict"):
        net.load_params(path)
    net.load_params(path, trusted=True)
    assert_unchanged(net, source.params)


# ---------------------------------------------------------------- bad files, no half-loads
def bad_params(net):
    """``{case: (params or raw bytes, message pattern)}`` for load_params."""
    good = {k: v.copy() for k, v in net.params.items()}
    raw = pickle.dumps(good)
    cases = {
        "empty": (b"", "the file is empty"),
        "truncated": (raw[: len(raw) // 2], "not a pickle file, or a truncated one"),
        "text": (b"W1 = [[0.1, 0.2]]\n", "not a pickle file"),
        "list": ([good["W1"]], "expected a dict of parameter arrays, found a list"),
        "missing": (
            {k: v for k, v in good.items() if k != "b2"},
            r"missing \['b2'\], unexpected \[\]",
        ),
        "unknown": ({**good, "W9": good["W1"]}, r"missing \[\], unexpected \['W9'\]"),
        "shape": (
            {**good, "W2": good["W2"][:-1]},
            r"'W2': expected shape \(3, 2\), found \(2, 2\)",
        ),
        "int": (
            {**good, "b1": np.arange(3)},
            "'b1': expected a floating-point array, found dtype int64",
        ),
        "none": ({**good, "b1": np.array([None] * 3)}, "refused NumPy dtype"),
        "complex": (
            {**good, "b1": good["b1"] + 1j},
            "'b1': expected a floating-point array, found dtype complex128",
        ),
        "nan": ({**good, "W1": np.full((4, 3), np.nan)}, "'W1': 12 of 12 values are NaN"),
        "checkpoint": (
            {"version": 1, "params": good},
            r"missing \['W1', 'W2', 'b1', 'b2'\], unexpected \['params', 'version'\]",
        ),
    }
    return cases


@pytest.mark.parametrize("case", sorted(bad_params(small_net())))
def test_bad_params_files_change_nothing(tmp_path, case):
    net = small_net()
    before = snapshot(net)
    content, message = bad_params(net)[case]
    path = tmp_path / "bad.pkl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        dump(content, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning, no cast RuntimeWarning
        with pytest.raises(LoadError, match=message) as info:
            net.load_params(path)
    assert str(path) in str(info.value)
    assert_unchanged(net, before)


def test_overflow_into_float32_is_refused_even_for_nonfinite_checkpoints(tmp_path):
    net = small_net(np.float32)
    before = snapshot(net)
    params = {k: v.astype(np.float64) for k, v in net.params.items()}
    params["W2"][1, 1] = 1e300
    path = dump(params, tmp_path / "big.pkl")
    for allow in (False, True):
        with pytest.raises(LoadError, match="'W2': values up to 1e\\+300 overflow float32"):
            net.load_params(path, allow_nonfinite=allow)
    assert_unchanged(net, before)


def test_keywords_accept_nonfinite_values_and_unknown_keys(tmp_path):
    net = small_net()
    params = {**snapshot(net), "extra": np.zeros(1)}
    params["b1"][0] = np.inf
    path = dump(params, tmp_path / "diverged.pkl")
    with pytest.raises(LoadError, match="unexpected"):
        net.load_params(path, allow_nonfinite=True)
    with pytest.raises(LoadError, match="'b1': 1 of 3 values are NaN or infinite"):
        net.load_params(path, strict=False)
    net.load_params(path, strict=False, allow_nonfinite=True)
    assert net.params["b1"][0] == np.inf and "extra" not in net.params


def trainer_state(trainer):
    return (
        trainer.current_iter,
        list(trainer.train_loss_list),
        snapshot(trainer.network),
        {k: v.copy() for k, v in (trainer.optimizer.m or {}).items()},
        trainer._get_rng_state(),
        np.random.get_state()[1].copy(),
        trainer.network.buffers(),
    )


def assert_trainer_unchanged(trainer, before):
    after = trainer_state(trainer)
    assert after[0] == before[0] and after[1] == before[1] and after[4] == before[4]
    assert_unchanged(trainer.network, before[2])
    assert after[3].keys() == before[3].keys()
    for key in before[3]:
        np.testing.assert_array_equal(after[3][key], before[3][key])
    np.testing.assert_array_equal(after[5], before[5])
    for key, value in before[6].items():
        np.testing.assert_array_equal(after[6][key], value)


def checkpoint_corruptions():
    def other_network(state):
        state["params"]["W1"] = np.zeros((10, 17))

    def nan_in_adam(state):
        state["optimizer_state"]["v"]["W2"][0, 0] = np.nan

    def bad_buffer(state):
        state["buffers"]["BatchNorm1.running_var"] = np.zeros(5)

    def bad_rng(state):
        state["batch_rng_state"] = {"bit_generator": "PCG64", "state": "none"}

    def bad_history(state):
        state["train_loss_list"][0] = "loss"

    return {
        "other network": (other_network, r"'W1': expected shape \(10, 16\), found \(10, 17\)"),
        "nan in Adam": (nan_in_adam, "Adam v 'W2': 1 of"),
        "buffer": (bad_buffer, r"'BatchNorm1.running_var': expected shape \(16,\), found \(5,\)"),
        "rng": (bad_rng, r"batch_rng_state: expected a dict with keys \['bit_generator'"),
        "history": (bad_history, r"train_loss_list\[0\]: expected a number, found 'loss'"),
    }


@pytest.mark.parametrize("case", sorted(checkpoint_corruptions()))
def test_bad_checkpoints_change_nothing(tmp_path, case):
    corrupt, message = checkpoint_corruptions()[case]
    path = tmp_path / "ckpt.pkl"
    make_trainer(epochs=1, extend=True, rng=0, checkpoint_path=path).train()
    state = load_file(path)
    corrupt(state)
    dump(state, path)
    trainer = make_trainer(epochs=2, extend=True, net_seed=5, rng=1)
    for _ in range(3):
        trainer.train_step()
    before = trainer_state(trainer)
    with pytest.raises(LoadError, match=message):
        trainer.load_checkpoint(path)
    assert_trainer_unchanged(trainer, before)


# ---------------------------------------------------------------- .npz
def test_npz_params_need_no_pickle(tmp_path):
    source = small_net(rng=1)
    path = tmp_path / "params.npz"
    source.save_params(path)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["W1", "W2", "b1", "b2"]
    net = small_net(np.float32, rng=2)
    net.load_params(path)
    for key, value in source.params.items():
        np.testing.assert_array_equal(net.params[key], value.astype(np.float32))


def test_npz_with_object_arrays_is_refused(tmp_path):
    path = tmp_path / "params.npz"
    np.savez(path, W1=np.array([None, 1], dtype=object))
    with pytest.raises(LoadError, match=f"{path}: member 'W1': refused NumPy dtype '\\|O'"):
        load_file(path)


def test_suffix_and_content_must_agree(tmp_path):
    small_net().save_params(tmp_path / "params.npz")
    os.replace(tmp_path / "params.npz", tmp_path / "params.pkl")
    with pytest.raises(LoadError, match="is a zip archive"):
        small_net().load_params(tmp_path / "params.pkl")


# ---------------------------------------------------------------- CLI
def test_cli_refuses_a_malicious_checkpoint_in_one_line(tmp_path, capsys):
    marker = tmp_path / "marker"
    ckpt = dump({"version": 1, "x": Reduces(os.system, f"touch {marker}")}, tmp_path / "c.pkl")
    argv = [
        "--quiet",
        "--model",
        "mlp",
        "--layers",
        "reference",
        "--epochs",
        "1",
        "--digits-size",
        "8",
        "--checkpoint",
        str(ckpt),
        "--resume",
    ]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nntrain: error: {ckpt}: refused to load global posix.system")
    assert err.count("\n") == 1 and not marker.exists()
    ckpt.write_bytes(b"\x80\x05\x95")
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert capsys.readouterr().err.startswith(f"nntrain: error: {ckpt}: not a pickle file")
    assert "--trust-pickle" in cli.build_parser().format_help()


# ---------------------------------------------------------------- atomic saves
KILLED_WRITER = """
import pickle, sys, time
def stalled_dump(obj, f, protocol=None):
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
pickle.dump = stalled_dump
import nnlayers.reference
from nntrain import MultiLayerNet
MultiLayerNet(4, [3], 2, layers=nnlayers.reference, rng=9).save_params(sys.argv[1])
"""


def temp_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def test_a_killed_save_keeps_the_old_file_and_its_temp_file_is_removed(tmp_path):
    path = tmp_path / "params.pkl"
    small_net(rng=1).save_params(path)
    before = path.read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not temp_files(tmp_path) and time.monotonic() < deadline:
            assert writer.poll() is None, writer.stderr.read()
            time.sleep(0.05)
        assert writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    stale = temp_files(tmp_path)
    assert len(stale) == 1 and f".{writer.pid}-{_host_tag()}." in stale[0]
    small_net().load_params(path)
    assert temp_files(tmp_path) == []
    (tmp_path / stale[0]).write_bytes(b"partial")
    small_net(rng=3).save_params(path)
    assert sorted(os.listdir(tmp_path)) == ["params.pkl"]


def test_temp_files_of_live_writers_are_kept(tmp_path):
    path = tmp_path / "params.pkl"
    dead = 2**22 + 1  # above Linux's largest PID
    kept = [
        tmp_path / f".params.pkl.{os.getpid()}-{_host_tag()}.abc_123.tmp",  # live
        tmp_path / f".params.pkl.{dead}-00000000.abc_123.tmp",  # another machine's
        tmp_path / f".other.pkl.{dead}-{_host_tag()}.abc_123.tmp",
    ]  # another file's
    for name in kept:
        name.write_bytes(b"in flight")
    small_net().save_params(path)
    small_net().load_params(path)
    assert all(name.exists() for name in kept)


def test_resume_with_the_deep_network_refuses_a_simple_checkpoint(tmp_path):
    simple = SimpleConvNet(
        input_dim=(1, 8, 8),
        hidden_size=5,
        layers=reference,
        rng=0,
        conv_param={"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
    )
    path = tmp_path / "simple.npz"
    simple.save_params(path)
    net = MultiLayerNetExtend(10, [16, 16], 3, use_batchnorm=True, layers=reference)
    before = snapshot(net)
    with pytest.raises(LoadError, match=r"parameter keys do not match \(missing \['beta1'"):
        net.load_params(path)
    assert_unchanged(net, before)
