"""Layers and networks pickle and copy like the book's: at every point of a training step
(fresh, after forward, after backward) a copy computes exactly what the original does and
shares nothing mutable with it; a pickle carries no scratch."""

import copy
import pickle

import numpy as np
import pytest

import nnlayers
from conv_routes import ROUTES, convolution_route
from nnbench.cases import build_network, network_batch
from nntrain.optimizers import Adam

RNG = np.random.default_rng(7)
X4 = RNG.standard_normal((4, 3, 8, 7))
X2 = RNG.standard_normal((4, 6))
LABELS = np.array([0, 2, 1, 2])


def layer_cases():
    """``(name, make layer, input, forward)``: every layer of nnlayers."""
    conv_w = RNG.standard_normal((5, 3, 3, 3))
    return [
        ("Relu", nnlayers.Relu, X4, lambda layer, x: layer.forward(x)),
        ("Sigmoid", nnlayers.Sigmoid, X4, lambda layer, x: layer.forward(x)),
        (
            "Affine",
            lambda: nnlayers.Affine(RNG.standard_normal((168, 5)), np.zeros(5)),
            X4,
            lambda layer, x: layer.forward(x),
        ),
        ("Dropout", lambda: nnlayers.Dropout(0.3, rng=5), X4, lambda layer, x: layer.forward(x)),
        (
            "BatchNormalization",
            lambda: nnlayers.BatchNormalization(np.ones(6), np.zeros(6)),
            X2,
            lambda layer, x: layer.forward(x),
        ),
        (
            "BatchNormalization per channel",
            lambda: nnlayers.BatchNormalization(np.ones(3), np.zeros(3), per_channel=True),
            X4,
            lambda layer, x: layer.forward(x),
        ),
        (
            "Convolution",
            lambda: nnlayers.Convolution(conv_w, np.zeros(5), 1, 1),
            X4,
            lambda layer, x: layer.forward(x),
        ),
        ("Pooling", lambda: nnlayers.Pooling(2, 2, 2), X4, lambda layer, x: layer.forward(x)),
        (
            "SoftmaxWithLoss",
            nnlayers.SoftmaxWithLoss,
            X2[:, :3],
            lambda layer, x: np.asarray(layer.forward(x, LABELS)),
        ),
    ]


COPIES = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
}


def _step(layer, forward, x):
    out = forward(layer, x)
    dout = np.ones_like(out) if out.ndim else 1
    return out, layer.backward(dout)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("point", ["fresh", "after forward", "after backward"])
@pytest.mark.parametrize("case", layer_cases(), ids=lambda case: case[0])
def test_a_copied_layer_computes_what_the_original_does(case, point, how, route):
    name, make, x, forward = case
    with convolution_route(route):
        layer = make()
        if point != "fresh":
            out = forward(layer, x)
        if point == "after backward":
            layer.backward(np.ones_like(out) if out.ndim else 1)
        twin = COPIES[how](layer)
        assert type(twin) is type(layer)
        if point == "after forward" and name != "SoftmaxWithLoss":
            # the pending backward of the forward taken before the copy
            dout = np.ones_like(out)
            np.testing.assert_array_equal(twin.backward(dout), layer.backward(dout))
        for _ in range(2):
            got, want = _step(twin, forward, x), _step(layer, forward, x)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
        for attr in ("dW", "db", "dgamma", "dbeta", "running_mean", "running_var"):
            if getattr(layer, attr, None) is not None:
                np.testing.assert_array_equal(getattr(twin, attr), getattr(layer, attr))


def test_a_deep_copy_shares_nothing_mutable():
    W = RNG.standard_normal((5, 3, 3, 3))
    layer = nnlayers.Convolution(W, np.zeros(5), 1, 1)
    layer.forward(X4)
    twin = copy.deepcopy(layer)
    assert twin.W is not layer.W and twin._engine is not layer._engine
    twin.W += 1.0  # an optimizer step on the copy
    np.testing.assert_array_equal(layer.W, W)
    assert not np.shares_memory(twin.x, layer.x)


def test_a_shallow_copy_shares_the_parameters_but_not_the_pending_state():
    layer = nnlayers.Convolution(RNG.standard_normal((5, 3, 3, 3)), np.zeros(5), 1, 1)
    out = layer.forward(X4)
    twin = copy.copy(layer)
    assert twin.W is layer.W  # as the book's layers: a shallow copy shares parameters
    twin.forward(X4[:2])  # the copy's forward does not replace the original's pending one
    assert layer.backward(np.ones_like(out)).shape == X4.shape


@pytest.mark.skipif("matmul" not in ROUTES, reason="needs the columns route")
def test_a_pickle_carries_no_scratch_or_kept_columns():
    x = RNG.standard_normal((16, 8, 12, 12))
    layer = nnlayers.Convolution(RNG.standard_normal((4, 8, 3, 3)), np.zeros(4), 1, 1)
    with convolution_route("matmul"):
        out = layer.forward(x)  # keeps the batch's columns for backward
        layer.backward(np.ones_like(out))
        layer.forward(x)
    columns = 16 * 8 * 9 * 12 * 12 * 8
    assert layer._engine._saved.col is not None and layer._engine._scratch is not None
    data = pickle.dumps(layer)
    assert len(data) < columns // 2  # the input and parameters, not the columns
    twin = pickle.loads(data)
    assert twin._engine._saved.col is None and twin._engine._scratch is None
    with convolution_route("matmul"):
        np.testing.assert_array_equal(
            twin.backward(np.ones_like(out)), layer.backward(np.ones_like(out))
        )


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("model", ["simple", "deep"])
@pytest.mark.parametrize("point", ["fresh", "after forward", "after backward"])
def test_a_copied_network_trains_exactly_as_the_original(model, point, how):
    net = build_network(model, "nnlayers", np.float32, 0)
    rng = np.random.default_rng(3)
    x, t = network_batch(rng, np.float32, 8)
    if point == "after forward":
        net.loss(x, t)
    elif point == "after backward":
        net.gradient(x, t)
    twin = COPIES[how](net)
    assert twin._layers is net._layers  # the layer module, by name
    optimizers = Adam(), Adam()
    for step in range(2):
        x, t = network_batch(rng, np.float32, 8)
        grads = []
        for network, optimizer in zip((net, twin), optimizers):
            np.random.seed(step)  # the same dropout masks
            grad = network.gradient(x, t)
            optimizer.update(network.params, grad)
            grads.append(grad)
        for key in grads[0]:
            np.testing.assert_array_equal(grads[1][key], grads[0][key], err_msg=key)
    for key in net.params:
        np.testing.assert_array_equal(twin.params[key], net.params[key])
        assert not np.shares_memory(twin.params[key], net.params[key])
