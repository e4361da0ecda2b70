"""nntrain optimizers against hand-computed updates."""

import numpy as np
import pytest

from nntrain.optimizers import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    make_optimizer,
)


def setup():
    params = {"W": np.array([[1.0, -2.0], [0.5, 3.0]]), "b": np.array([0.25, -0.75])}
    grads = {"W": np.array([[0.1, -0.4], [2.0, 0.0]]), "b": np.array([-1.0, 0.5])}
    return params, grads


def test_sgd_one_step():
    params, grads = setup()
    W = params["W"]
    SGD(lr=0.1).update(params, grads)
    assert params["W"] is W  # in place
    np.testing.assert_allclose(W, [[0.99, -1.96], [0.3, 3.0]])
    np.testing.assert_allclose(params["b"], [0.35, -0.8])


def test_momentum_two_steps():
    params, grads = setup()
    W0 = params["W"].copy()
    opt = Momentum(lr=0.1, momentum=0.9)
    opt.update(params, grads)
    v1 = -0.1 * grads["W"]
    np.testing.assert_allclose(params["W"], W0 + v1)
    opt.update(params, grads)
    v2 = 0.9 * v1 - 0.1 * grads["W"]
    np.testing.assert_allclose(params["W"], W0 + v1 + v2)


def test_nesterov_one_step():
    params, grads = setup()
    W0 = params["W"].copy()
    Nesterov(lr=0.1, momentum=0.9).update(params, grads)
    v = -0.1 * grads["W"]
    np.testing.assert_allclose(params["W"], W0 + 0.81 * v - 1.9 * 0.1 * grads["W"])


def test_adagrad_two_steps():
    params, grads = setup()
    W0 = params["W"].copy()
    g = grads["W"]
    opt = AdaGrad(lr=0.5)
    opt.update(params, grads)
    W1 = W0 - 0.5 * g / (np.sqrt(g * g) + 1e-7)
    np.testing.assert_allclose(params["W"], W1)
    opt.update(params, grads)
    np.testing.assert_allclose(params["W"], W1 - 0.5 * g / (np.sqrt(2 * g * g) + 1e-7))


def test_rmsprop_one_step():
    params, grads = setup()
    W0 = params["W"].copy()
    g = grads["W"]
    RMSprop(lr=0.01, decay_rate=0.9).update(params, grads)
    h = 0.1 * g * g
    np.testing.assert_allclose(params["W"], W0 - 0.01 * g / (np.sqrt(h) + 1e-7))


def test_adam_two_steps():
    params, grads = setup()
    W0 = params["W"].copy()
    g = grads["W"]
    opt = Adam(lr=0.001, beta1=0.9, beta2=0.999)
    opt.update(params, grads)
    m, v = 0.1 * g, 0.001 * g**2
    lr_t = 0.001 * np.sqrt(1 - 0.999) / (1 - 0.9)
    W1 = W0 - lr_t * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(params["W"], W1)
    opt.update(params, grads)
    m, v = m + 0.1 * (g - m), v + 0.001 * (g**2 - v)
    lr_t = 0.001 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    np.testing.assert_allclose(params["W"], W1 - lr_t * m / (np.sqrt(v) + 1e-7))
    assert opt.iter == 2


def test_book_defaults():
    assert SGD().lr == 0.01
    assert (Momentum().lr, Momentum().momentum) == (0.01, 0.9)
    assert (Nesterov().lr, Nesterov().momentum) == (0.01, 0.9)
    assert AdaGrad().lr == 0.01
    assert (RMSprop().lr, RMSprop().decay_rate) == (0.01, 0.99)
    assert (Adam().lr, Adam().beta1, Adam().beta2) == (0.001, 0.9, 0.999)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name):
    params_a, grads = setup()
    opt_a = make_optimizer(name.upper())
    opt_a.update(params_a, grads)
    state = opt_a.state_dict()
    params_b = {k: v.copy() for k, v in params_a.items()}
    opt_b = make_optimizer(name)
    opt_b.load_state_dict(state)
    opt_a.update(params_a, grads)
    opt_b.update(params_b, grads)
    for key in params_a:
        np.testing.assert_array_equal(params_a[key], params_b[key])
    # the saved state is a copy, not a view of the live state
    opt_a.update(params_a, grads)
    for arrays in (v for v in state.values() if isinstance(v, dict)):
        for key, arr in arrays.items():
            assert all(
                arr is not live for live in (getattr(opt_a, n)[key] for n in opt_a._state_names)
            )


def test_float32_params_stay_float32():
    params = {"W": np.ones((2, 2), np.float32)}
    grads = {"W": np.full((2, 2), 0.5, np.float64)}
    for name in OPTIMIZERS:
        make_optimizer(name).update(params, grads)
    assert params["W"].dtype == np.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("lbfgs")
    with pytest.raises(ValueError, match="lr"):
        SGD(lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        Momentum(momentum=1.5)
    with pytest.raises(TypeError, match="adam"):
        make_optimizer("adam", momentum=0.9)
