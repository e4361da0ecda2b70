"""The drop-in contract: names, signatures, attributes, shared parameters, and a whole
SimpleConvNet-shaped network giving the reference's loss and gradients."""

import inspect
from collections import OrderedDict

import numpy as np
import pytest

import nnlayers
import nnlayers.layers
import nnlayers.reference as ref
from strategies import assert_close, make_values

LAYER_NAMES = (
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
)
FUNCTION_NAMES = (
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "sum_squared_error",
    "cross_entropy_error",
    "softmax_loss",
)
# what ``from common.layers import *`` gives a script in the book's code
COMMON_LAYERS_NAMES = {"np", "im2col", "col2im", *LAYER_NAMES, *FUNCTION_NAMES}


def _star_import(module_name):
    namespace = {}
    exec(f"from {module_name} import *", namespace)
    namespace.pop("__builtins__", None)
    return namespace


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("module_name", ["nnlayers", "nnlayers.layers"])
def test_star_import_provides_every_common_layers_name(module_name):
    ns = _star_import(module_name)
    missing = COMMON_LAYERS_NAMES - set(ns)
    assert not missing, f"from {module_name} import * lacks {sorted(missing)}"
    assert ns["np"] is np
    for name in LAYER_NAMES:
        assert ns[name] is getattr(nnlayers, name)
        assert ns[name].__name__ == name  # networks match on class names / key substrings
    for name in FUNCTION_NAMES:
        assert ns[name] is getattr(nnlayers, name)
    assert ns["im2col"] is nnlayers.im2col and ns["col2im"] is nnlayers.col2im


def test_star_import_covers_the_reference_module():
    ns = _star_import("nnlayers")
    assert set(ref.__all__) - set(ns) == set()
    for name in ref.__all__:
        assert callable(ns[name])


def test_star_import_names_are_the_fast_ones_not_the_reference():
    ns = _star_import("nnlayers")
    for name in LAYER_NAMES:
        assert ns[name] is not getattr(ref, name)
        assert ns[name].__module__ == "nnlayers.layers"


def _positional_params(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    return [
        p
        for p in inspect.signature(target).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


@pytest.mark.parametrize("name", sorted(set(ref.__all__)))
def test_signatures_extend_the_reference(name):
    """Same positional parameters with the same defaults; extras only keyword-only/defaulted."""
    ours, theirs = getattr(nnlayers, name), getattr(ref, name)
    our_params, ref_params = _positional_params(ours), _positional_params(theirs)
    assert [p.name for p in our_params[: len(ref_params)]] == [p.name for p in ref_params]
    for a, b in zip(our_params, ref_params):
        assert a.default == b.default, (name, a.name)
    for extra in our_params[len(ref_params) :]:
        assert extra.default is not inspect.Parameter.empty, (name, extra.name)


@pytest.mark.parametrize("name", ["forward", "backward"])
@pytest.mark.parametrize("layer", LAYER_NAMES)
def test_method_signatures_match_the_reference(layer, name):
    ours = inspect.signature(getattr(getattr(nnlayers, layer), name))
    theirs = inspect.signature(getattr(getattr(ref, layer), name))
    assert [(p.name, p.default) for p in ours.parameters.values()] == [
        (p.name, p.default) for p in theirs.parameters.values()
    ]


def test_constructor_defaults():
    W = np.zeros((2, 1, 3, 3))
    conv = nnlayers.Convolution(W, 0)
    assert (conv.stride, conv.pad) == (1, 0)
    pool = nnlayers.Pooling(2, 2)
    assert (pool.pool_h, pool.pool_w, pool.stride, pool.pad) == (2, 2, 1, 0)
    assert nnlayers.Dropout().dropout_ratio == 0.5
    bn = nnlayers.BatchNormalization(np.ones(3), np.zeros(3))
    assert bn.momentum == 0.9 and bn.running_mean is None and bn.running_var is None


# ------------------------------------------------------------------ isinstance / names
def test_layers_are_found_by_class_and_key_like_the_book_networks_do():
    layers = OrderedDict()
    layers["Affine1"] = nnlayers.Affine(np.ones((3, 2)), np.zeros(2))
    layers["BatchNorm1"] = nnlayers.BatchNormalization(np.ones(2), np.zeros(2))
    layers["Relu1"] = nnlayers.Relu()
    layers["Dropout1"] = nnlayers.Dropout(0.5)
    flags = [isinstance(layer, nnlayers.Dropout) for layer in layers.values()]
    assert flags == [False, False, False, True]
    assert isinstance(layers["Dropout1"], nnlayers.layers.Dropout)
    assert [k for k in layers if "BatchNorm" in k] == ["BatchNorm1"]
    for layer in layers.values():
        assert type(layer).__name__ in ("Affine", "BatchNormalization", "Relu", "Dropout")


# ------------------------------------------------------------------ attributes callers touch
def test_attributes_callers_read_exist_and_match_the_reference():
    x4 = make_values(1, (2, 3, 6, 6))
    W = make_values(2, (4, 3, 3, 3))
    b = make_values(3, (4,))
    conv, rconv = nnlayers.Convolution(W, b, 1, 1), ref.Convolution(W, b, 1, 1)
    out = conv.forward(x4)
    rconv.forward(x4)
    conv.backward(np.ones_like(out))
    rconv.backward(np.ones_like(out))
    assert conv.W is W and conv.b is b and conv.stride == 1 and conv.pad == 1
    assert_close(conv.dW, rconv.dW)
    assert_close(conv.db, rconv.db)

    pool, rpool = nnlayers.Pooling(2, 2, stride=2), ref.Pooling(2, 2, stride=2)
    pool.forward(x4)
    rpool.forward(x4)
    np.testing.assert_array_equal(pool.arg_max, rpool.arg_max)
    assert pool.arg_max.shape == rpool.arg_max.shape

    x2 = make_values(4, (5, 4))
    affine = nnlayers.Affine(make_values(5, (4, 3)), np.zeros(3))
    affine.forward(x2)
    affine.backward(np.ones((5, 3)))
    for attr in ("W", "b", "x", "original_x_shape", "dW", "db"):
        assert getattr(affine, attr) is not None, attr
    assert affine.original_x_shape == (5, 4)

    relu = nnlayers.Relu()
    relu.forward(x2)
    np.testing.assert_array_equal(relu.mask, x2 <= 0)
    sig = nnlayers.Sigmoid()
    assert sig.forward(x2) is sig.out

    swl = nnlayers.SoftmaxWithLoss()
    t = np.array([0, 1, 2, 3, 0])
    loss = swl.forward(x2, t)
    assert swl.loss == loss and swl.t is not None and swl.y.shape == (5, 4)

    drop = nnlayers.Dropout(0.25)
    drop.forward(x2)
    assert drop.dropout_ratio == 0.25 and drop.mask.shape == x2.shape

    bn = nnlayers.BatchNormalization(np.ones(4), np.zeros(4))
    bn.forward(x2)
    bn.backward(np.ones_like(x2))
    for attr in ("gamma", "beta", "running_mean", "running_var", "dgamma", "dbeta"):
        assert getattr(bn, attr) is not None, attr


def test_dropout_ratio_can_be_changed_after_construction():
    layer = nnlayers.Dropout(0.5)
    layer.dropout_ratio = 0.0
    x = make_values(6, (3, 3))
    np.testing.assert_array_equal(layer.forward(x, train_flg=False), x)


# ------------------------------------------------------------------ shared parameters
def test_convolution_sees_in_place_updates_and_rebinding(workspace_limit):
    x = make_values(10, (3, 2, 6, 5))
    W = make_values(11, (3, 2, 3, 2))
    b = make_values(12, (3,))
    for limit in (None, 1):
        workspace_limit(limit)
        layer = nnlayers.Convolution(W, b, 1, 1)
        layer.forward(x)
        W -= 0.25 * np.sign(W)  # an optimizer step, in place
        b += 1.0
        assert_close(layer.forward(x), ref.Convolution(W, b, 1, 1).forward(x))
        W2 = make_values(13, (3, 2, 3, 2))
        layer.W = W2  # load_params rebinds
        layer.b = 0
        assert_close(layer.forward(x), ref.Convolution(W2, 0, 1, 1).forward(x))
        layer.W = W


def test_convolution_in_place_update_between_forward_and_backward_uses_new_W():
    # the reference's dx uses col_W from forward; both agree when W is unchanged, so
    # check only that the next forward after a step sees it and dW stays correct
    x = make_values(14, (2, 1, 5, 5))
    W = make_values(15, (2, 1, 3, 3))
    layer = nnlayers.Convolution(W, np.zeros(2))
    out1 = layer.forward(x)
    W *= 2.0
    out2 = layer.forward(x)
    assert_close(out2, 2.0 * out1)


def test_affine_and_batchnorm_see_in_place_updates_and_rebinding():
    x = make_values(16, (4, 5))
    W, b = make_values(17, (5, 3)), make_values(18, (3,))
    affine = nnlayers.Affine(W, b)
    affine.forward(x)
    W[...] = 0.5
    b -= 2
    assert_close(affine.forward(x), x @ W + b)
    affine.W = np.eye(5, 3)
    assert_close(affine.forward(x), x @ np.eye(5, 3) + b)

    gamma, beta = np.ones(5), np.zeros(5)
    bn = nnlayers.BatchNormalization(gamma, beta)
    bn.forward(x)
    gamma *= 3.0
    beta += 1.0
    assert_close(bn.forward(x), ref.BatchNormalization(gamma, beta).forward(x))
    bn.gamma = np.full(5, -1.0)
    assert_close(bn.forward(x), ref.BatchNormalization(np.full(5, -1.0), beta).forward(x))


def test_python_scalar_bias_zero_works_everywhere():
    x4 = make_values(19, (2, 2, 5, 5))
    W4 = make_values(20, (3, 2, 3, 3))
    conv = nnlayers.Convolution(W4, 0)
    assert_close(conv.forward(x4), ref.Convolution(W4, 0).forward(x4))
    dout = make_values(21, (2, 3, 3, 3))
    conv.backward(dout)
    assert_close(conv.db, dout.sum(axis=(0, 2, 3)))
    x2, W2 = make_values(22, (3, 4)), make_values(23, (4, 2))
    affine = nnlayers.Affine(W2, 0)
    assert_close(affine.forward(x2), x2 @ W2)
    affine.backward(np.ones((3, 2)))
    np.testing.assert_array_equal(affine.db, [3.0, 3.0])


def test_float32_network_parameters_stay_float32_and_are_not_copied():
    W = make_values(24, (3, 1, 3, 3), np.float32)
    b = np.zeros(3, dtype=np.float32)
    layer = nnlayers.Convolution(W, b)
    x = make_values(25, (2, 1, 5, 5), np.float32)
    out = layer.forward(x)
    assert out.dtype == np.float32
    layer.backward(np.ones_like(out))
    assert layer.dW.dtype == np.float32 and layer.db.dtype == np.float32
    W -= layer.dW  # the optimizer's update is visible, no stale cast
    assert_close(layer.forward(x), ref.Convolution(W, b).forward(x), np.float32)


def test_numerical_gradient_through_shared_parameters_matches_backprop():
    """The book's gradient check: perturb params in place, the next forward must see it."""
    rng = np.random.default_rng(26)
    params = {
        "W1": rng.standard_normal((2, 1, 3, 3)),
        "b1": rng.standard_normal(2),
        "W2": rng.standard_normal((2 * 2 * 2, 3)),
        "b2": rng.standard_normal(3),
    }
    layers = OrderedDict()
    layers["Conv1"] = nnlayers.Convolution(params["W1"], params["b1"], 1, 0)
    layers["Relu1"] = nnlayers.Relu()
    layers["Pool1"] = nnlayers.Pooling(2, 2, stride=2)
    layers["Affine1"] = nnlayers.Affine(params["W2"], params["b2"])
    x = rng.standard_normal((2, 1, 6, 6))
    weights = rng.standard_normal((2, 3))  # loss = <out, weights>: smooth, no log fudge

    def loss(_=None):
        h = x
        for layer in layers.values():
            h = layer.forward(h)
        return float(np.sum(h * weights))

    loss()
    d = weights
    for layer in reversed(list(layers.values())):
        d = layer.backward(d)
    grads = {
        "W1": layers["Conv1"].dW,
        "b1": layers["Conv1"].db,
        "W2": layers["Affine1"].dW,
        "b2": layers["Affine1"].db,
    }
    for key, value in params.items():
        saved = value.copy()
        numeric = nnlayers.numerical_gradient(loss, value, h=1e-5)
        np.testing.assert_array_equal(value, saved)
        err = np.max(np.abs(numeric - grads[key])) / max(np.max(np.abs(grads[key])), 1e-12)
        assert err < 1e-6, (key, err)


# ------------------------------------------------------------------ whole network
def _simple_convnet(module, params):
    layers = OrderedDict()
    layers["Conv1"] = module.Convolution(params["W1"], params["b1"], 1, 0)
    layers["Relu1"] = module.Relu()
    layers["Pool1"] = module.Pooling(pool_h=2, pool_w=2, stride=2)
    layers["Affine1"] = module.Affine(params["W2"], params["b2"])
    layers["Relu2"] = module.Relu()
    layers["Affine2"] = module.Affine(params["W3"], params["b3"])
    return layers, module.SoftmaxWithLoss()


def _loss_and_grads(module, params, x, t):
    layers, last = _simple_convnet(module, params)
    h = x
    for layer in layers.values():
        h = layer.forward(h)
    loss = last.forward(h, t)
    d = last.backward(1)
    for layer in reversed(list(layers.values())):
        d = layer.backward(d)
    grads = {}
    for i, key in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
        grads[f"W{i}"] = layers[key].dW
        grads[f"b{i}"] = layers[key].db
    return loss, grads, d


@pytest.mark.parametrize("side, label_form", [(12, "labels"), (28, "one-hot")])
def test_simple_convnet_loss_and_gradients_equal_the_reference(side, label_form):
    """conv 30 5x5 -> relu -> pool 2x2 s2 -> affine 100 -> relu -> affine 10 -> softmax."""
    rng = np.random.default_rng(side)
    pooled = 30 * ((side - 4) // 2) ** 2
    params = {
        "W1": 0.1 * rng.standard_normal((30, 1, 5, 5)),
        "b1": 0.1 * rng.standard_normal(30),
        "W2": 0.1 * rng.standard_normal((pooled, 100)),
        "b2": 0.1 * rng.standard_normal(100),
        "W3": 0.1 * rng.standard_normal((100, 10)),
        "b3": 0.1 * rng.standard_normal(10),
    }
    snapshot = {k: v.copy() for k, v in params.items()}
    x = rng.random((4, 1, side, side))
    labels = rng.integers(0, 10, size=4)
    t = labels if label_form == "labels" else np.eye(10)[labels]
    loss, grads, dx = _loss_and_grads(nnlayers, params, x, t)
    ref_loss, ref_grads, ref_dx = _loss_and_grads(ref, params, x, t)
    assert np.isfinite(loss) and loss > 0
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    for key in params:
        assert grads[key].shape == params[key].shape and grads[key].dtype == np.float64
        scale = np.max(np.abs(ref_grads[key]))
        assert scale > 0, key
        np.testing.assert_allclose(
            grads[key], ref_grads[key], rtol=1e-10, atol=1e-10 * scale, err_msg=key
        )
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-10 * np.max(np.abs(ref_dx)))
    for key in params:  # the forward/backward passes never write the parameters
        np.testing.assert_array_equal(params[key], snapshot[key])


def test_simple_convnet_float32_stays_float32_and_close_to_the_reference():
    rng = np.random.default_rng(99)
    params = {
        "W1": 0.1 * rng.standard_normal((30, 1, 5, 5)),
        "b1": np.zeros(30),
        "W2": 0.1 * rng.standard_normal((30 * 4 * 4, 100)),
        "b2": np.zeros(100),
        "W3": 0.1 * rng.standard_normal((100, 10)),
        "b3": np.zeros(10),
    }
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    x = rng.random((4, 1, 12, 12)).astype(np.float32)
    t = rng.integers(0, 10, size=4)
    loss, grads, dx = _loss_and_grads(nnlayers, p32, x, t)
    ref_loss, ref_grads, _ = _loss_and_grads(
        ref, {k: v.astype(np.float64) for k, v in p32.items()}, x.astype(np.float64), t
    )
    assert np.asarray(loss).dtype == np.float32 and dx.dtype == np.float32
    assert abs(float(loss) - ref_loss) <= 1e-4 * abs(ref_loss)
    for key in params:
        assert grads[key].dtype == np.float32, key
        assert_close(
            grads[key],
            ref_grads[key],
            np.float32,
            scale=float(np.max(np.abs(ref_grads[key]))),
            err_msg=key,
        )
