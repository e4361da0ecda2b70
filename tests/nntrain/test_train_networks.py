"""nntrain networks: layer binding, gradients, reference equivalence, save/load."""

import os
import pickle

import numpy as np
import pytest

import nnlayers.reference as reference
import nntrain._io
from nntrain import DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet


def _fast_layers():
    try:
        import nnlayers
    except ImportError:
        return None
    return nnlayers if hasattr(nnlayers, "Convolution") else None


FAST = _fast_layers()
LAYER_MODULES = [
    pytest.param(reference, id="reference"),
    pytest.param(
        FAST,
        id="nnlayers",
        marks=pytest.mark.skipif(
            FAST is None, reason="nnlayers top-level exports not available yet"
        ),
    ),
]
needs_fast = pytest.mark.skipif(FAST is None, reason="nnlayers top-level exports not available yet")

TINY_CONV = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
TINY_DEEP = dict(
    input_dim=(1, 8, 8),
    conv_param_1={"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
    conv_param_2={"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
    conv_param_3={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
    conv_param_4={"filter_num": 3, "filter_size": 3, "pad": 2, "stride": 1},
    conv_param_5={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
    conv_param_6={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
    hidden_size=6,
    output_size=5,
)


def make_net(kind, layers, rng=0, dtype=np.float64):
    """Small networks of every kind, deterministic given ``rng``."""
    if kind == "simple":
        return SimpleConvNet(
            input_dim=(2, 6, 6),
            conv_param=TINY_CONV,
            hidden_size=7,
            output_size=5,
            weight_init_std=0.1,
            layers=layers,
            rng=rng,
            dtype=dtype,
        )
    if kind == "deep":
        net = DeepConvNet(**TINY_DEEP, layers=layers, rng=rng, dtype=dtype)
        for layer in net.layers:  # ratio 0: masks are all ones, so losses are deterministic
            if isinstance(layer, net._layers.Dropout):
                layer.dropout_ratio = 0.0
        return net
    if kind == "mlp":
        return MultiLayerNet(
            12,
            [8, 6],
            5,
            activation="sigmoid",
            weight_init_std="xavier",
            weight_decay_lambda=0.1,
            layers=layers,
            rng=rng,
            dtype=dtype,
        )
    if kind == "mlp-bn":
        return MultiLayerNetExtend(
            12,
            [8, 6],
            5,
            weight_decay_lambda=0.05,
            use_batchnorm=True,
            layers=layers,
            rng=rng,
            dtype=dtype,
        )
    raise AssertionError(kind)


def make_batch(kind, n=6, seed=1, dtype=np.float64, one_hot=False):
    rng = np.random.default_rng(seed)
    shape = {"simple": (n, 2, 6, 6), "deep": (n, 1, 8, 8)}.get(kind, (n, 12))
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.integers(0, 5, n)
    if one_hot:
        t = np.eye(5)[t]
    return x, t


KINDS = ["simple", "deep", "mlp", "mlp-bn"]


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize("layers", LAYER_MODULES)
@pytest.mark.parametrize("kind", KINDS)
def test_params_are_the_layer_arrays(kind, layers):
    net = make_net(kind, layers)
    for key, layer, attr in net._slots:
        assert getattr(layer, attr) is net.params[key]
    assert set(net.params) == {key for key, _, _ in net._slots}


def test_simple_conv_net_book_shapes_and_layer_names():
    net = SimpleConvNet(layers=reference)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {
        "W1": (30, 1, 5, 5),
        "b1": (30,),
        "W2": (30 * 12 * 12, 100),
        "b2": (100,),
        "W3": (100, 10),
        "b3": (10,),
    }
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert isinstance(net.last_layer, reference.SoftmaxWithLoss)
    assert all(v.dtype == np.float64 for v in net.params.values())


def test_deep_conv_net_book_shapes_and_weight_layer_indices():
    net = DeepConvNet(layers=reference)
    assert net.params["W7"].shape == (64 * 4 * 4, 50)
    assert net.params["W8"].shape == (50, 10)
    assert net.params["W4"].shape == (32, 32, 3, 3)
    assert len(net.layers) == 20
    for i, index in enumerate((0, 2, 5, 7, 10, 12, 15, 18), start=1):
        assert net.layers[index].W is net.params[f"W{i}"]
    assert net.layers[3 + 1].__class__ is reference.Pooling
    assert [type(net.layers[i]).__name__ for i in (17, 19)] == ["Dropout", "Dropout"]
    assert net.layers[7].pad == 2


def test_deep_conv_net_he_scales():
    np.random.seed(3)
    net = DeepConvNet(layers=reference)
    np.random.seed(3)
    pre = [1 * 9, 16 * 9, 16 * 9, 32 * 9, 32 * 9, 64 * 9, 64 * 16, 50]
    expected_w1 = np.sqrt(2.0 / pre[0]) * np.random.randn(16, 1, 3, 3)
    np.testing.assert_array_equal(net.params["W1"], expected_w1)


def test_global_rng_reproduces_book_init():
    np.random.seed(0)
    net = SimpleConvNet(layers=reference)
    np.random.seed(0)
    w1 = 0.01 * np.random.randn(30, 1, 5, 5)
    w2 = 0.01 * np.random.randn(4320, 100)
    np.testing.assert_array_equal(net.params["W1"], w1)
    np.testing.assert_array_equal(net.params["W2"], w2)


def test_multilayer_init_scales_and_layer_names():
    np.random.seed(5)
    net = MultiLayerNetExtend(
        4,
        [3],
        2,
        activation="sigmoid",
        weight_init_std="he",
        use_dropout=True,
        use_batchnorm=True,
        layers=reference,
    )
    np.random.seed(5)
    np.testing.assert_array_equal(net.params["W1"], np.sqrt(2.0 / 4) * np.random.randn(4, 3))
    assert list(net.layers) == [
        "Affine1",
        "BatchNorm1",
        "Activation_function1",
        "Dropout1",
        "Affine2",
    ]
    assert set(net.params) == {"W1", "b1", "gamma1", "beta1", "W2", "b2"}
    np.testing.assert_array_equal(net.params["gamma1"], np.ones(3))
    net2 = MultiLayerNet(4, [3], 2, weight_init_std=0.5, layers=reference, rng=1)
    assert net2.params["W1"].std() < 2


def test_same_seed_same_params_and_dtype():
    a = make_net("simple", reference, rng=7, dtype=np.float32)
    b = make_net("simple", reference, rng=np.random.default_rng(7), dtype=np.float32)
    for key in a.params:
        assert a.params[key].dtype == np.float32
        np.testing.assert_array_equal(a.params[key], b.params[key])


def test_bad_arguments():
    with pytest.raises(TypeError, match="dtype"):
        SimpleConvNet(layers=reference, dtype=np.int32)
    with pytest.raises(ValueError, match="conv_param"):
        SimpleConvNet(
            input_dim=(1, 3, 3),
            conv_param={"filter_num": 2, "filter_size": 5, "pad": 0, "stride": 1},
            layers=reference,
        )
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(4, [3], 2, activation="tanh", layers=reference)
    with pytest.raises(ValueError, match="weight_init_std"):
        MultiLayerNet(4, [3], 2, weight_init_std="bogus", layers=reference)
    with pytest.raises(TypeError, match="rng"):
        SimpleConvNet(layers=reference, rng="seed")
    with pytest.raises(TypeError, match="lacks"):
        SimpleConvNet(layers=np)
    with pytest.raises(ValueError, match="layers"):
        SimpleConvNet(layers="torch")


# ---------------------------------------------------------------- gradients
def randomize_biases(net, seed):
    """Non-zero biases keep ReLU inputs off the kink at exactly 0 (all-zero windows)."""
    rng = np.random.default_rng(seed)
    for key, value in net.params.items():
        if key.startswith("b"):
            value[...] = rng.normal(0, 0.1, value.shape)


@pytest.mark.parametrize("layers", LAYER_MODULES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_numerical_gradient(kind, layers):
    # Seeds chosen so no ReLU input or pooling near-tie lies within h = 1e-4 of a kink,
    # where a central difference is legitimately wrong.
    net = make_net(kind, layers, rng=4)
    randomize_biases(net, 4)
    x, t = make_batch(kind, seed=14)
    numerical = net.numerical_gradient(x, t)
    analytic = net.gradient(x, t)
    assert set(analytic) == set(net.params) == set(numerical)
    for key in net.params:
        if np.max(np.abs(analytic[key] - numerical[key])) < 1e-9:
            continue  # e.g. an affine bias followed by batch norm: the gradient is exactly 0
        assert rel_error(analytic[key], numerical[key]) < 1e-6, key


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_records_loss_and_accepts_one_hot(kind):
    net = make_net(kind, reference)
    x, t = make_batch(kind)
    grads = net.gradient(x, t)
    train_flg = {"mlp-bn": {"train_flg": True}}.get(kind, {})
    assert net.last_loss == pytest.approx(net.loss(x, t, **train_flg), rel=1e-12)
    _, t_hot = make_batch(kind, one_hot=True)
    grads_hot = net.gradient(x, t_hot)
    for key in grads:
        np.testing.assert_allclose(grads_hot[key], grads[key], rtol=1e-10, atol=1e-14)


def test_weight_decay_in_loss_and_gradient():
    net = make_net("mlp", reference)
    x, t = make_batch("mlp")
    plain = net.last_layer.forward(net.predict(x), t)
    decay = sum(0.5 * 0.1 * np.sum(net.params[f"W{i}"] ** 2) for i in (1, 2, 3))
    assert net.loss(x, t) == pytest.approx(plain + decay)


@needs_fast
@pytest.mark.parametrize("kind", KINDS)
def test_reference_and_fast_layers_agree(kind):
    ref_net, fast_net = make_net(kind, reference), make_net(kind, FAST)
    x, t = make_batch(kind, n=9)
    train_flg = {"mlp-bn": {"train_flg": True}}.get(kind, {})
    assert fast_net.loss(x, t, **train_flg) == pytest.approx(
        ref_net.loss(x, t, **train_flg), rel=1e-10
    )
    g_ref, g_fast = ref_net.gradient(x, t), fast_net.gradient(x, t)
    for key in g_ref:
        np.testing.assert_allclose(g_fast[key], g_ref[key], rtol=1e-9, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(fast_net.predict(x), ref_net.predict(x), rtol=1e-10, atol=1e-12)


@needs_fast
def test_reference_and_fast_deep_net_agree_with_dropout():
    ref_net = DeepConvNet(**TINY_DEEP, layers=reference, rng=0)
    fast_net = DeepConvNet(**TINY_DEEP, layers=FAST, rng=0)
    x, t = make_batch("deep", n=4)
    np.random.seed(11)
    g_ref = ref_net.gradient(x, t)
    np.random.seed(11)
    g_fast = fast_net.gradient(x, t)
    for key in g_ref:
        np.testing.assert_allclose(g_fast[key], g_ref[key], rtol=1e-9, atol=1e-12, err_msg=key)


# ---------------------------------------------------------------- predict / accuracy
def test_accuracy_includes_the_remainder_batch():
    net = make_net("simple", reference)
    x, t = make_batch("simple", n=7)
    expected = np.mean(np.argmax(net.predict(x), axis=1) == t)
    assert net.accuracy(x, t, batch_size=3) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(5)[t], batch_size=100) == pytest.approx(expected)


def test_train_flag_reaches_dropout_and_batchnorm():
    net = MultiLayerNetExtend(
        12, [8], 5, use_dropout=True, use_batchnorm=True, layers=reference, rng=0
    )
    x, _ = make_batch("mlp")
    test_out = net.predict(x)
    np.testing.assert_array_equal(test_out, net.predict(x, train_flg=False))
    np.random.seed(0)
    train_out = net.predict(x, train_flg=True)
    assert not np.allclose(train_out, test_out)
    assert np.any(net.layers["BatchNorm1"].running_mean != 0)


def test_deep_net_predict_is_deterministic_in_test_mode():
    net = DeepConvNet(**TINY_DEEP, layers=reference, rng=0)
    x, _ = make_batch("deep")
    np.testing.assert_array_equal(net.predict(x), net.predict(x))


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    path = tmp_path / "params.pkl"
    net = make_net(kind, reference, rng=1)
    x, t = make_batch(kind)
    net.gradient(x, t)  # moves batch-norm running stats away from zero
    net.save_params(path)
    other = make_net(kind, reference, rng=2)
    if kind == "mlp-bn":
        other.set_buffers(net.buffers())
    other.load_params(path)
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    for key, layer, attr in other._slots:
        assert getattr(layer, attr) is other.params[key]
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert type(raw) is dict and set(raw) == set(net.params)


def test_loads_plain_pickle_of_float64_arrays(tmp_path):
    """A file as the book's save_params writes it: a pickled dict of float64 arrays."""
    source = SimpleConvNet(
        input_dim=(1, 8, 8), conv_param=TINY_CONV, hidden_size=10, layers=reference, rng=3
    )
    path = tmp_path / "book_params.pkl"
    with open(path, "wb") as f:
        pickle.dump({k: v.copy() for k, v in source.params.items()}, f)
    x = np.random.default_rng(0).random((4, 1, 8, 8))
    net64 = SimpleConvNet(
        input_dim=(1, 8, 8), conv_param=TINY_CONV, hidden_size=10, layers=reference, rng=4
    )
    net64.load_params(path)
    np.testing.assert_array_equal(net64.predict(x), source.predict(x))
    net32 = SimpleConvNet(
        input_dim=(1, 8, 8),
        conv_param=TINY_CONV,
        hidden_size=10,
        layers=reference,
        rng=4,
        dtype=np.float32,
    )
    net32.load_params(str(path))
    assert all(v.dtype == np.float32 for v in net32.params.values())
    assert net32.layers["Conv1"].W is net32.params["W1"]
    np.testing.assert_allclose(
        net32.predict(x.astype(np.float32)), source.predict(x), rtol=1e-4, atol=1e-6
    )


@needs_fast
def test_weights_from_reference_net_give_same_predictions_on_fast_net(tmp_path):
    ref_net = make_net("simple", reference, rng=5)
    ref_net.save_params(tmp_path / "p.pkl")
    fast_net = make_net("simple", FAST, rng=6)
    fast_net.load_params(tmp_path / "p.pkl")
    x, _ = make_batch("simple")
    np.testing.assert_allclose(fast_net.predict(x), ref_net.predict(x), rtol=1e-10, atol=1e-12)


def test_load_rejects_mismatched_files(tmp_path):
    net = make_net("simple", reference)
    path = tmp_path / "p.pkl"
    bad = {k: v.copy() for k, v in net.params.items()}
    bad["W2"] = bad["W2"][:-1]
    with open(path, "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(ValueError, match="W2.*shape"):
        net.load_params(path)
    del bad["W2"]
    with open(path, "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(ValueError, match="missing \\['W2'\\]"):
        net.load_params(path)
    with open(path, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(ValueError, match="dict"):
        net.load_params(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "params.pkl"
    net = make_net("mlp", reference, rng=1)
    net.save_params(path)
    before = path.read_bytes()

    def failing_dump(obj, f, protocol=None):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(nntrain._io.pickle, "dump", failing_dump)
    other = make_net("mlp", reference, rng=2)
    with pytest.raises(OSError, match="disk full"):
        other.save_params(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["params.pkl"]
    monkeypatch.undo()
    other.save_params(path)
    assert path.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["params.pkl"]
