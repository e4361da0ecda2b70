"""nntrain sweep's search space: specs from the command line and TOML, and their errors."""

import pytest

pytest.importorskip("optuna")

import optuna  # noqa: E402

from nntrain.sweep.space import SearchSpace, SpaceError, load_toml, parse_param  # noqa: E402


def test_command_line_specs_sample_within_their_ranges():
    space = SearchSpace(
        parse_param(p)
        for p in (
            "lr=log:1e-6:1e-2",
            "weight_decay=float:0:1e-3",
            "hidden_size=int:10:20",
            "batch_size=logint:16:256",
            "optimizer=choice:sgd,Adam",
            "batchnorm=choice:true,false",
            "hidden_layers=6",
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = space.suggest(study.ask())
        assert 1e-6 <= params["lr"] <= 1e-2 and 0 <= params["weight_decay"] <= 1e-3
        assert 10 <= params["hidden_size"] <= 20 and 16 <= params["batch_size"] <= 256
        assert params["optimizer"] in ("sgd", "adam") and params["batchnorm"] in (True, False)
        assert params["hidden_layers"] == 6


def test_toml_space_and_fixed_values(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(
        '[space]\nlr = {log = [1e-4, 1e-1]}\noptimizer = {choice = ["sgd", "adam"]}\n'
        'dropout = "float:0:0.5"\nhidden_layers = 3\nbatchnorm = true\n'
    )
    space = SearchSpace(load_toml(path))
    assert space.describe() == {
        "lr": "log:0.0001:0.1",
        "optimizer": "choice:sgd,adam",
        "dropout": "float:0:0.5",
        "hidden_layers": "3",
        "batchnorm": "True",
    }
    assert SearchSpace([parse_param("lr=0.1"), parse_param("hidden_layers=2")]).fixed() == {
        "lr": 0.1,
        "hidden_layers": 2,
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ("foo=log:1:2", "unknown parameter 'foo'"),
        ("lr=log:0.1:0.01", "low must be < high"),
        ("lr=float:0.1:0.1", "low must be < high"),
        ("lr=log:0:1", "a log range needs a positive low bound"),
        ("weight_decay=log:-1:1", "a log range needs a positive low bound"),
        ("lr=float:-1:1", "lr must be > 0.0"),
        ("dropout=float:0:1.5", "dropout must be < 1.0"),
        ("optimizer=choice:sgd,lbfgs", "optimizer"),
        ("hidden_size=float:1:10", "integer parameter"),
        ("hidden_size=int:1:x", "hidden_size"),
        ("lr=log:1", "needs LOW:HIGH"),
        ("lr", "expected NAME=SPEC"),
    ],
)
def test_bad_specs_name_the_option_and_parameter(spec, message):
    with pytest.raises(SpaceError, match="--param") as info:
        parse_param(spec)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("space = [\n", "not valid TOML"),
        ("[other]\nlr = 1\n", "expected a [space] table"),
        ("[space]\nlr = {range = [1, 2]}\n", "expected one of"),
    ],
)
def test_bad_toml_files(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(SpaceError, match="--space") as info:
        load_toml(path)
    assert message in str(info.value)


def test_unreadable_toml(tmp_path):
    with pytest.raises(SpaceError, match="cannot read the file"):
        load_toml(tmp_path / "missing.toml")


def test_mlp_only_parameters_refused_for_conv_nets():
    with pytest.raises(SpaceError, match="only apply to --model mlp"):
        SearchSpace([parse_param("dropout=float:0:0.5")]).check_model("simple")
