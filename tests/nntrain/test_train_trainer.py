"""nntrain.Trainer: histories, determinism, checkpoint resume, output."""

import sys

import numpy as np
import pytest

import nnlayers.reference as reference
from nntrain import MultiLayerNet, MultiLayerNetExtend, SimpleConvNet, Trainer


def toy_data(n_train=130, n_test=40, seed=0):
    """Two Gaussian blobs per class in 10 dimensions, 3 classes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, (3, 10))
    t = rng.integers(0, 3, n_train + n_test)
    x = centers[t] + rng.normal(0, 1, (len(t), 10))
    return x[:n_train], t[:n_train], x[n_train:], t[n_train:]


def make_trainer(epochs=3, *, net_seed=0, extend=False, **kwargs):
    x, t, xt, tt = toy_data()
    if extend:
        net = MultiLayerNetExtend(
            10,
            [16, 16],
            3,
            use_dropout=True,
            dropout_ration=0.2,
            use_batchnorm=True,
            layers=reference,
            rng=net_seed,
        )
    else:
        net = MultiLayerNet(10, [16], 3, layers=reference, rng=net_seed)
    kwargs.setdefault("quiet", True)
    return Trainer(
        net,
        x,
        t,
        xt,
        tt,
        epochs=epochs,
        mini_batch_size=32,
        optimizer=kwargs.pop("optimizer", "Adam"),
        optimizer_param=kwargs.pop("optimizer_param", {"lr": 0.01}),
        **kwargs,
    )


def test_histories_and_learning():
    trainer = make_trainer(epochs=4, rng=1)
    acc = trainer.train()
    assert trainer.iter_per_epoch == 5  # ceil(130 / 32)
    assert len(trainer.train_loss_list) == 20
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 4
    assert len(trainer.epoch_times) == len(trainer.eval_times) == 4
    assert trainer.train_loss_list[-1] < trainer.train_loss_list[0]
    assert acc == trainer.test_acc_list[-1] > 0.8
    history = trainer.history()
    assert history["train_loss"] == trainer.train_loss_list


def test_recorded_loss_is_the_pre_update_loss_unless_asked():
    a = make_trainer(epochs=1, rng=3)
    a.train()
    b = make_trainer(epochs=1, rng=3, loss_after_update=True)
    b.train()
    # same weights trajectory, different loss bookkeeping
    np.testing.assert_array_equal(a.network.params["W1"], b.network.params["W1"])
    assert a.train_loss_list != b.train_loss_list


def test_same_seed_same_losses():
    a = make_trainer(rng=42)
    a.train()
    b = make_trainer(rng=np.random.default_rng(42))
    b.train()
    assert a.train_loss_list == b.train_loss_list
    c = make_trainer(rng=43)
    c.train()
    assert c.train_loss_list != a.train_loss_list


def test_global_rng_like_the_book():
    np.random.seed(7)
    a = make_trainer(epochs=1)
    a.train()
    np.random.seed(7)
    b = make_trainer(epochs=1)
    b.train()
    assert a.train_loss_list == b.train_loss_list


@pytest.mark.parametrize("extend", [False, True], ids=["mlp", "dropout+batchnorm"])
@pytest.mark.parametrize("rng", [5, None], ids=["seeded", "global"])
@pytest.mark.parametrize("suffix", ["pkl", "npz"])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, extend, rng, suffix):
    np.random.seed(123)
    full = make_trainer(epochs=3, extend=extend, rng=rng)
    full.train()

    path = tmp_path / f"ckpt.{suffix}"
    np.random.seed(123)
    first = make_trainer(epochs=2, extend=extend, rng=rng, checkpoint_path=path)
    first.train()
    np.random.seed(999)  # the resumed run must not depend on the global state at restart
    resumed = make_trainer(
        epochs=3,
        extend=extend,
        net_seed=77,
        rng=None if rng is None else 1234,
        checkpoint_path=path,
        resume=True,
    )
    assert resumed.current_epoch == 2 and resumed.current_iter == 10
    resumed.train()
    assert resumed.train_loss_list == full.train_loss_list
    assert resumed.test_acc_list == full.test_acc_list
    assert len(resumed.epoch_times) == 3
    for key in full.network.params:
        np.testing.assert_array_equal(resumed.network.params[key], full.network.params[key])


def test_resume_without_checkpoint_file_starts_fresh(tmp_path):
    trainer = make_trainer(epochs=1, rng=0, checkpoint_path=tmp_path / "none.pkl", resume=True)
    assert trainer.current_iter == 0
    trainer.train()
    assert (tmp_path / "none.pkl").exists()


def test_checkpoint_mismatch_is_rejected(tmp_path):
    path = tmp_path / "ckpt.pkl"
    make_trainer(epochs=1, rng=0, checkpoint_path=path).train()
    with pytest.raises(ValueError, match="optimizer_class"):
        make_trainer(
            epochs=2,
            rng=0,
            checkpoint_path=path,
            resume=True,
            optimizer="sgd",
            optimizer_param={"lr": 0.1},
        )


def test_train_step_evaluates_at_epoch_end():
    trainer = make_trainer(epochs=2, rng=0)
    for _ in range(trainer.iter_per_epoch - 1):
        trainer.train_step()
    assert trainer.train_acc_list == []
    trainer.train_step()
    assert len(trainer.train_acc_list) == 1 and trainer.current_epoch == 1


def test_evaluate_sample_num_and_eval_batch_size():
    x = np.random.default_rng(0).random((30, 1, 6, 6))
    t = np.arange(30) % 3
    net = SimpleConvNet(
        input_dim=(1, 6, 6),
        conv_param={"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
        hidden_size=4,
        output_size=3,
        layers=reference,
        rng=0,
    )
    trainer = Trainer(
        net,
        x,
        t,
        x,
        t,
        epochs=1,
        mini_batch_size=10,
        evaluate_sample_num_per_epoch=7,
        verbose=False,
        eval_batch_size=4,
        rng=0,
    )
    trainer.train()
    assert trainer.train_acc_list[0] * 7 == pytest.approx(round(trainer.train_acc_list[0] * 7))


def test_verbose_prints_one_line_per_epoch(capsys):
    trainer = make_trainer(epochs=2, rng=0, quiet=False)
    trainer.train()
    out = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in out if line.startswith("epoch")]
    assert len(epoch_lines) == 2
    assert "train acc" in epoch_lines[0] and "test acc" in epoch_lines[0] and "ms" in epoch_lines[0]
    assert out[-1].startswith("final test acc")


def test_quiet_prints_nothing(capsys):
    make_trainer(epochs=1, rng=0, quiet=True).train()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_bad_arguments():
    x, t, xt, tt = toy_data()
    net = MultiLayerNet(10, [4], 3, layers=reference)
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(net, x, t, xt, tt, optimizer="lbfgs")
    with pytest.raises(ValueError, match="mini_batch_size"):
        Trainer(net, x, t, xt, tt, mini_batch_size=0)
    with pytest.raises(ValueError, match="x_train/t_train"):
        Trainer(net, x, t[:-1], xt, tt)
    with pytest.raises(ValueError, match="resume"):
        Trainer(net, x, t, xt, tt, resume=True)


def test_missing_tqdm_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    trainer = make_trainer(epochs=1, rng=0, quiet=False)
    with pytest.raises(ImportError, match=r"pip install 'nnkernels\[train\]'"):
        trainer.train()
    make_trainer(epochs=1, rng=0, quiet=True).train()  # quiet runs need no tqdm
