"""Numerical-gradient checks of every backward pass (float64, relative error below 1e-6).

Each check uses the scalar loss ``sum(forward(x) * G)`` for a fixed random ``G``, whose
gradient is ``backward(G)``; the inputs and parameters are perturbed in place by central
differences (``nnlayers.numerical_gradient``), so a layer that cached a parameter copy
would fail here too.
"""

import numpy as np
import pytest

import nnlayers
from strategies import make_values

H = 1e-5
MAX_REL_ERROR = 1e-6


def rel_error(numeric, analytic):
    numeric, analytic = np.asarray(numeric), np.asarray(analytic)
    assert numeric.shape == analytic.shape
    scale = max(np.max(np.abs(numeric)), np.max(np.abs(analytic)))
    assert scale > 1e-8, "a gradient check on an all-zero gradient proves nothing"
    return float(np.max(np.abs(numeric - analytic)) / scale)


def check_layer(layer, x, forward_kwargs=None, params=(), grads=(), seed=0):
    """Compare backward's dx (and ``grads`` attributes for ``params`` attributes) to numerics."""
    forward_kwargs = forward_kwargs or {}
    out = layer.forward(x, **forward_kwargs)
    G = make_values(seed + 1000, out.shape)

    def loss(_=None):
        return float(np.sum(layer.forward(x, **forward_kwargs) * G))

    loss()
    dx = layer.backward(G.copy())
    analytic = {
        name: np.array(getattr(layer, grad), copy=True) for name, grad in zip(params, grads)
    }
    errors = {"dx": rel_error(nnlayers.numerical_gradient(loss, x, h=H), dx)}
    for name in params:
        value = getattr(layer, name)
        errors[name] = rel_error(nnlayers.numerical_gradient(loss, value, h=H), analytic[name])
    for name, err in errors.items():
        assert err < MAX_REL_ERROR, (name, err, errors)
    return errors


# ------------------------------------------------------------------ Convolution
CONV_CASES = [
    # N, C, H, W, FN, FH, FW, stride, pad
    (1, 1, 5, 5, 1, 3, 3, 1, 0),
    (2, 2, 5, 4, 3, 3, 2, 1, 1),
    (2, 3, 7, 6, 2, 2, 3, 2, 2),
    (1, 2, 6, 7, 2, 3, 1, 3, 1),
    (2, 1, 4, 4, 2, 5, 5, 1, 2),
    (3, 2, 3, 5, 1, 1, 1, 2, 0),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("limit", [None, 1], ids=["whole", "chunked"])
def test_convolution_gradients(case, limit, workspace_limit, conv_route):
    n, c, h, w, fn, fh, fw, stride, pad = case
    workspace_limit(limit)
    x = make_values(1, (n, c, h, w))
    W = make_values(2, (fn, c, fh, fw))
    b = make_values(3, (fn,))
    layer = nnlayers.Convolution(W, b, stride, pad)
    check_layer(layer, x, params=("W", "b"), grads=("dW", "db"))


# ------------------------------------------------------------------ Pooling
def _distinct(shape, seed, negative=False):
    """Values at least 0.01 apart (far more than H), so no argmax flips under perturbation."""
    n = int(np.prod(shape))
    values = (np.random.default_rng(seed).permutation(n) + 1) * 0.01
    values = -values if negative else values
    return values.reshape(shape)


POOL_CASES = [
    # N, C, H, W, ph, pw, stride, pad
    (2, 2, 4, 4, 2, 2, 2, 0),
    (1, 3, 5, 6, 3, 2, 1, 0),
    (2, 1, 7, 5, 3, 3, 2, 1),
    (1, 2, 5, 5, 2, 3, 3, 1),
    (2, 2, 6, 4, 3, 3, 1, 2),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
def test_pooling_gradients(case, negative):
    n, c, h, w, ph, pw, stride, pad = case
    x = _distinct((n, c, h, w), seed=4, negative=negative)
    check_layer(nnlayers.Pooling(ph, pw, stride, pad), x)


# ------------------------------------------------------------------ BatchNormalization
@pytest.mark.parametrize(
    "shape, per_channel",
    [
        ((4, 5), False),
        ((3, 2, 3, 2), False),
        ((3, 2, 3, 2), True),
        ((2, 3, 2, 2), True),
        ((5, 3), True),
    ],
)
def test_batchnorm_gradients(shape, per_channel):
    x = make_values(5, shape) * 2 + 1
    n_stats = shape[1] if per_channel or len(shape) == 2 else int(np.prod(shape[1:]))
    gamma = make_values(6, (n_stats,)) + 1.5
    beta = make_values(7, (n_stats,))
    layer = nnlayers.BatchNormalization(gamma, beta, per_channel=per_channel)
    check_layer(layer, x, dict(train_flg=True), params=("gamma", "beta"), grads=("dgamma", "dbeta"))


# ------------------------------------------------------------------ Affine / activations
@pytest.mark.parametrize("x_shape", [(3, 4), (2, 2, 3), (2, 1, 2, 3)])
def test_affine_gradients(x_shape):
    x = make_values(8, x_shape)
    d = int(np.prod(x_shape[1:]))
    layer = nnlayers.Affine(make_values(9, (d, 5)), make_values(10, (5,)))
    check_layer(layer, x, params=("W", "b"), grads=("dW", "db"))


def test_relu_gradient():
    x = make_values(11, (3, 4, 5))
    x[np.abs(x) < 0.01] = 0.5  # keep away from the kink
    check_layer(nnlayers.Relu(), x)


def test_sigmoid_gradient():
    check_layer(nnlayers.Sigmoid(), make_values(12, (4, 6)) * 3)


def test_dropout_gradient_with_a_fixed_mask():
    layer = nnlayers.Dropout(0.4)
    x = make_values(13, (5, 6))

    class Reseeded:
        """Dropout whose every forward draws the same mask (np.random reseeded)."""

        def forward(self, v, train_flg=True):
            np.random.seed(3)
            return layer.forward(v, train_flg)

        def backward(self, dout):
            return layer.backward(dout)

    check_layer(Reseeded(), x)
    assert 0 < layer.mask.sum() < layer.mask.size


@pytest.mark.parametrize("form", ["labels", "column", "one-hot"])
def test_softmax_with_loss_gradient(form):
    n, k = 4, 3
    x = make_values(14, (n, k)) * 0.5  # modest scores: the +1e-7 in the log stays negligible
    labels = np.array([0, 2, 1, 2])
    t = {"labels": labels, "column": labels.reshape(n, 1), "one-hot": np.eye(k)[labels]}[form]
    layer = nnlayers.SoftmaxWithLoss()

    def loss(_=None):
        return float(layer.forward(x, t))

    loss()
    dx = layer.backward()
    assert rel_error(nnlayers.numerical_gradient(loss, x, h=H), dx) < MAX_REL_ERROR


# ------------------------------------------------------------------ im2col / col2im
@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (3, 2)])
def test_col2im_is_the_gradient_of_im2col(stride, pad):
    x = make_values(15, (2, 2, 5, 6))
    col = nnlayers.im2col(x, 3, 2, stride, pad)
    G = make_values(16, col.shape)

    def loss(_=None):
        return float(np.sum(nnlayers.im2col(x, 3, 2, stride, pad) * G))

    numeric = nnlayers.numerical_gradient(loss, x, h=H)
    analytic = nnlayers.col2im(G, x.shape, 3, 2, stride, pad)
    assert rel_error(numeric, analytic) < MAX_REL_ERROR
