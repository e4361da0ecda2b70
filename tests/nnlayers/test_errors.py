"""Every misuse raises ValueError/TypeError naming the argument, before any kernel runs.

Each case builds what it needs (running valid forwards first when the error is about a
backward), then ``forbid_kernels()`` makes every JIT kernel raise an AssertionError if
launched, then the bad call must raise the expected error with the argument's name.
"""

import numpy as np
import pytest

import nnkernels
import nnlayers

X4 = np.ones((2, 3, 6, 5))
W4 = np.ones((4, 3, 3, 3))
B4 = np.zeros(4)


def conv(**kw):
    args = dict(W=W4, b=B4, stride=1, pad=0)
    args.update(kw)
    return nnlayers.Convolution(**args)


COMPLEX = np.ones((2, 3, 6, 5), dtype=complex)
OBJECT = np.ones((2, 3, 6, 5)).astype(object)
STRINGS = np.full((2, 3, 6, 5), "a")

# (id, exception, match, make-layer-or-None, call(obj))
CASES = [
    # ---- wrong ndim
    ("conv-x-3d", ValueError, r"x must be 4-D", lambda: conv(), lambda l: l.forward(X4[0])),
    ("conv-x-5d", ValueError, r"x must be 4-D", lambda: conv(), lambda l: l.forward(X4[None])),
    ("conv-W-3d", ValueError, r"W must be 4-D", lambda: conv(W=W4[0]), lambda l: l.forward(X4)),
    (
        "pool-x-3d",
        ValueError,
        r"x must be 4-D",
        lambda: nnlayers.Pooling(2, 2, 2),
        lambda l: l.forward(X4[0]),
    ),
    (
        "bn-x-3d",
        ValueError,
        r"x must be 2-D .* or 4-D",
        lambda: nnlayers.BatchNormalization(np.ones(30), np.zeros(30)),
        lambda l: l.forward(X4[0]),
    ),
    (
        "affine-W-1d",
        ValueError,
        r"W must be 2-D",
        lambda: nnlayers.Affine(np.ones(5), 0),
        lambda l: l.forward(np.ones((2, 5))),
    ),
    (
        "affine-x-0d",
        ValueError,
        r"x must have a batch axis",
        lambda: nnlayers.Affine(np.ones((1, 2)), 0),
        lambda l: l.forward(np.float64(1.0)),
    ),
    (
        "softmax-x-1d",
        ValueError,
        r"x must be 2-D",
        lambda: nnlayers.SoftmaxWithLoss(),
        lambda l: l.forward(np.ones(3), np.array([1])),
    ),
    ("im2col-x-3d", ValueError, r"x must be 4-D", None, lambda _: nnkernels.im2col(X4[0], 2, 2)),
    (
        "im2col-per-sample-x-2d",
        ValueError,
        r"x must be 4-D",
        None,
        lambda _: nnkernels.im2col_per_sample(X4[0, 0], 2, 2),
    ),
    (
        "col2im-per-sample-cols-2d",
        ValueError,
        r"cols must be 3-D",
        None,
        lambda _: nnkernels.col2im_per_sample(np.ones((12, 20)), (1, 3, 6, 5), 2, 2),
    ),
    (
        "maxpool-x-2d",
        ValueError,
        r"x must be 4-D",
        None,
        lambda _: nnkernels.maxpool_forward(X4[0, 0], 2, 2),
    ),
    # ---- channels, features, sizes that do not fit
    (
        "conv-channels",
        ValueError,
        r"x has 2 channels .* W expects 3",
        lambda: conv(),
        lambda l: l.forward(np.ones((2, 2, 6, 5))),
    ),
    (
        "affine-features",
        ValueError,
        r"x has 6 features .* W expects 5",
        lambda: nnlayers.Affine(np.ones((5, 2)), 0),
        lambda l: l.forward(np.ones((2, 2, 3))),
    ),
    (
        "conv-bias-size",
        ValueError,
        r"\bb must have 4 elements",
        lambda: conv(b=np.zeros(3)),
        lambda l: l.forward(X4),
    ),
    (
        "conv-window-too-tall",
        ValueError,
        r"filter_h=7 is larger than the padded input height",
        lambda: conv(W=np.ones((4, 3, 7, 3))),
        lambda l: l.forward(X4),
    ),
    (
        "conv-window-too-wide-with-pad",
        ValueError,
        r"filter_w=8 is larger than the padded input width",
        lambda: conv(W=np.ones((4, 3, 3, 8)), pad=1),
        lambda l: l.forward(X4),
    ),
    (
        "pool-window-too-big",
        ValueError,
        r"pool_h=7 is larger than the padded input height",
        lambda: nnlayers.Pooling(7, 2, 1),
        lambda l: l.forward(X4),
    ),
    (
        "pool-pad-not-below-window",
        ValueError,
        r"pad must be smaller than the window",
        lambda: nnlayers.Pooling(2, 2, 2, pad=2),
        lambda l: l.forward(X4),
    ),
    (
        "im2col-window-too-big",
        ValueError,
        r"filter_w=6 is larger than the padded input width",
        None,
        lambda _: nnkernels.im2col(X4, 2, 6),
    ),
    (
        "bn-gamma-size",
        ValueError,
        r"gamma must have shape \(30,\)",
        lambda: nnlayers.BatchNormalization(np.ones(29), np.zeros(30)),
        lambda l: l.forward(np.ones((2, 30))),
    ),
    (
        "bn-empty-batch",
        ValueError,
        r"x must hold at least one sample",
        lambda: nnlayers.BatchNormalization(np.ones(3), np.zeros(3)),
        lambda l: l.forward(np.ones((0, 3))),
    ),
    # ---- stride < 1, pad < 0, non-integer sizes
    (
        "conv-stride-0",
        ValueError,
        r"stride must be >= 1, got 0",
        lambda: conv(stride=0),
        lambda l: l.forward(X4),
    ),
    (
        "conv-stride-negative",
        ValueError,
        r"stride must be >= 1, got -1",
        lambda: conv(stride=-1),
        lambda l: l.forward(X4),
    ),
    (
        "conv-pad-negative",
        ValueError,
        r"pad must be >= 0, got -1",
        lambda: conv(pad=-1),
        lambda l: l.forward(X4),
    ),
    (
        "conv-stride-float",
        TypeError,
        r"stride must be an integer, got float 1.5",
        lambda: conv(stride=1.5),
        lambda l: l.forward(X4),
    ),
    (
        "conv-stride-integral-float",
        TypeError,
        r"stride must be an integer",
        lambda: conv(stride=2.0),
        lambda l: l.forward(X4),
    ),
    (
        "conv-pad-float",
        TypeError,
        r"pad must be an integer",
        lambda: conv(pad=0.5),
        lambda l: l.forward(X4),
    ),
    (
        "conv-stride-string",
        TypeError,
        r"stride must be an integer",
        lambda: conv(stride="2"),
        lambda l: l.forward(X4),
    ),
    (
        "conv-stride-bool",
        TypeError,
        r"stride must be an integer",
        lambda: conv(stride=True),
        lambda l: l.forward(X4),
    ),
    (
        "conv-stride-none",
        TypeError,
        r"stride must be an integer",
        lambda: conv(stride=None),
        lambda l: l.forward(X4),
    ),
    (
        "pool-stride-0",
        ValueError,
        r"stride must be >= 1",
        lambda: nnlayers.Pooling(2, 2, 0),
        lambda l: l.forward(X4),
    ),
    (
        "pool-pad-negative",
        ValueError,
        r"pad must be >= 0",
        lambda: nnlayers.Pooling(2, 2, 1, -1),
        lambda l: l.forward(X4),
    ),
    (
        "pool-size-float",
        TypeError,
        r"pool_h must be an integer, got float 2.5",
        lambda: nnlayers.Pooling(2.5, 2, 2),
        lambda l: l.forward(X4),
    ),
    (
        "pool-stride-float",
        TypeError,
        r"stride must be an integer",
        lambda: nnlayers.Pooling(2, 2, 1.5),
        lambda l: l.forward(X4),
    ),
    (
        "pool-size-0",
        ValueError,
        r"pool_w must be >= 1",
        lambda: nnlayers.Pooling(2, 0, 1),
        lambda l: l.forward(X4),
    ),
    (
        "im2col-filter-float",
        TypeError,
        r"filter_h must be an integer",
        None,
        lambda _: nnkernels.im2col(X4, 2.0, 2),
    ),
    (
        "im2col-filter-0",
        ValueError,
        r"filter_w must be >= 1",
        None,
        lambda _: nnkernels.im2col(X4, 2, 0),
    ),
    (
        "im2col-stride-0",
        ValueError,
        r"stride must be >= 1",
        None,
        lambda _: nnkernels.im2col(X4, 2, 2, 0),
    ),
    (
        "im2col-pad-negative",
        ValueError,
        r"pad must be >= 0",
        None,
        lambda _: nnkernels.im2col(X4, 2, 2, 1, -2),
    ),
    (
        "nnlayers-im2col-stride-float",
        TypeError,
        r"stride must be an integer",
        None,
        lambda _: nnlayers.im2col(X4, 2, 2, stride=1.5),
    ),
    (
        "col2im-shape-float",
        TypeError,
        r"input_shape",
        None,
        lambda _: nnkernels.col2im(np.ones((60, 12)), (2, 3, 6.0, 5), 2, 2),
    ),
    (
        "col2im-shape-len",
        ValueError,
        r"input_shape must be \(N, C, H, W\)",
        None,
        lambda _: nnkernels.col2im(np.ones((60, 12)), (3, 6, 5), 2, 2),
    ),
    (
        "col2im-col-size",
        ValueError,
        r"col must have shape \(32, 12\)",
        None,
        lambda _: nnkernels.col2im(np.ones((41, 12)), (2, 3, 5, 5), 2, 2),
    ),
    (
        "col2im-per-sample-cols-shape",
        ValueError,
        r"cols must have shape \(2, 12, 20\)",
        None,
        lambda _: nnkernels.col2im_per_sample(np.ones((2, 12, 21)), (2, 3, 6, 5), 2, 2),
    ),
    (
        "conv-output-size-stride-float",
        TypeError,
        r"stride must be an integer",
        None,
        lambda _: nnlayers.conv_output_size(28, 5, 1.5, 0),
    ),
    # ---- complex / object / string input
    (
        "conv-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: conv(),
        lambda l: l.forward(COMPLEX),
    ),
    (
        "conv-x-object",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: conv(),
        lambda l: l.forward(OBJECT),
    ),
    (
        "conv-x-string",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: conv(),
        lambda l: l.forward(STRINGS),
    ),
    (
        "conv-x-ragged-list",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: conv(),
        lambda l: l.forward([[1.0, 2.0], [3.0]]),
    ),
    (
        "pool-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Pooling(2, 2, 2),
        lambda l: l.forward(COMPLEX),
    ),
    (
        "pool-x-string",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Pooling(2, 2, 2),
        lambda l: l.forward(STRINGS),
    ),
    (
        "bn-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.BatchNormalization(np.ones(3), np.zeros(3)),
        lambda l: l.forward(np.ones((2, 3), dtype=complex)),
    ),
    (
        "relu-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Relu(),
        lambda l: l.forward(COMPLEX),
    ),
    (
        "relu-x-object",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Relu(),
        lambda l: l.forward(OBJECT),
    ),
    (
        "sigmoid-x-string",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Sigmoid(),
        lambda l: l.forward(STRINGS),
    ),
    (
        "affine-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Affine(np.ones((5, 2)), 0),
        lambda l: l.forward(np.ones((2, 5), complex)),
    ),
    (
        "dropout-x-object",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.Dropout(),
        lambda l: l.forward(OBJECT),
    ),
    (
        "softmax-x-string",
        TypeError,
        r"\bx must be a real numeric array",
        lambda: nnlayers.SoftmaxWithLoss(),
        lambda l: l.forward(np.full((2, 3), "a"), [0, 1]),
    ),
    (
        "im2col-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        None,
        lambda _: nnkernels.im2col(COMPLEX, 2, 2),
    ),
    (
        "im2col-per-sample-x-object",
        TypeError,
        r"\bx must be a real numeric array",
        None,
        lambda _: nnkernels.im2col_per_sample(OBJECT, 2, 2),
    ),
    (
        "col2im-col-complex",
        TypeError,
        r"\bcol must be a real numeric array",
        None,
        lambda _: nnkernels.col2im(np.ones((60, 12), complex), (2, 3, 6, 5), 2, 2),
    ),
    (
        "col2im-per-sample-cols-string",
        TypeError,
        r"\bcols must be a real numeric array",
        None,
        lambda _: nnkernels.col2im_per_sample(np.full((2, 12, 20), "a"), (2, 3, 6, 5), 2, 2),
    ),
    (
        "maxpool-x-complex",
        TypeError,
        r"\bx must be a real numeric array",
        None,
        lambda _: nnkernels.maxpool_forward(COMPLEX, 2, 2),
    ),
    # ---- labels and ratios
    (
        "softmax-t-shape",
        ValueError,
        r"\bt must be labels of shape \(2,\)",
        lambda: nnlayers.SoftmaxWithLoss(),
        lambda l: l.forward(np.ones((2, 3)), np.zeros(5)),
    ),
    (
        "softmax-t-fractional",
        TypeError,
        r"integer labels t",
        lambda: nnlayers.SoftmaxWithLoss(),
        lambda l: l.forward(np.ones((2, 3)), np.array([0.5, 1.0])),
    ),
    (
        "softmax-t-label-too-large",
        ValueError,
        r"^t: label 12 at position 3 is out of range for 10 classes \(expected 0 to 9\)$",
        lambda: nnlayers.SoftmaxWithLoss(),
        lambda l: l.forward(np.ones((5, 10)), np.array([0, 9, 1, 12, 13])),
    ),
    (
        "softmax-t-label-negative",
        ValueError,
        r"^t: label -1 at position 1 is out of range for 10 classes",
        lambda: nnlayers.SoftmaxWithLoss(),
        lambda l: l.forward(np.ones((3, 10)), np.array([[2], [-1], [3]])),
    ),
    (
        "cross-entropy-t-label-negative",
        ValueError,
        r"^t: label -2 at position 0 is out of range for 4 classes",
        None,
        lambda _: nnlayers.cross_entropy_error(np.full((2, 4), 0.25), np.array([-2, 1])),
    ),
    (
        "dropout-ratio",
        ValueError,
        r"dropout_ratio must be in \[0, 1\]",
        lambda: nnlayers.Dropout(1.5),
        lambda l: l.forward(np.ones((2, 3))),
    ),
    (
        "dropout-ratio-negative",
        ValueError,
        r"dropout_ratio must be in \[0, 1\]",
        lambda: nnlayers.Dropout(-0.1),
        lambda l: l.forward(np.ones((2, 3))),
    ),
    # ---- settings
    (
        "workspace-float",
        TypeError,
        r"nbytes must be an int",
        None,
        lambda _: nnlayers.set_workspace_limit(1.5),
    ),
    (
        "workspace-zero",
        ValueError,
        r"nbytes must be positive",
        None,
        lambda _: nnlayers.set_workspace_limit(0),
    ),
    (
        "threads-zero",
        ValueError,
        r"\bn must be between 1 and",
        None,
        lambda _: nnlayers.set_num_threads(0),
    ),
    (
        "threads-float",
        TypeError,
        r"\bn must be an int",
        None,
        lambda _: nnlayers.set_num_threads(1.0),
    ),
    (
        "numerical-gradient-list",
        TypeError,
        r"\bx must be a NumPy array",
        None,
        lambda _: nnlayers.numerical_gradient(lambda v: 0.0, [1.0, 2.0]),
    ),
]


@pytest.mark.parametrize("exc, match, make, call", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_raises_named_error_before_any_kernel(exc, match, make, call, forbid_kernels):
    obj = make() if make is not None else None
    previous_limit = nnlayers.get_workspace_limit()
    forbid_kernels()
    with pytest.raises(exc, match=match) as info:
        call(obj)
    assert not type(info.value).__module__.startswith("numba"), type(info.value)
    assert nnlayers.get_workspace_limit() == previous_limit


def _forwarded(layer, x, *args):
    layer.forward(x, *args)
    return layer


# layers after a valid forward: (id, layer, right dout shape)
def _trained_layers():
    x4 = np.random.default_rng(0).standard_normal((2, 3, 6, 5))
    x2 = np.random.default_rng(1).standard_normal((4, 5))
    return [
        ("Convolution", lambda: _forwarded(conv(pad=1), x4), (2, 4, 6, 5)),
        ("Pooling", lambda: _forwarded(nnlayers.Pooling(2, 2, 2), x4), (2, 3, 3, 2)),
        (
            "BatchNormalization-2d",
            lambda: _forwarded(nnlayers.BatchNormalization(np.ones(5), np.zeros(5)), x2),
            (4, 5),
        ),
        (
            "BatchNormalization-4d",
            lambda: _forwarded(nnlayers.BatchNormalization(np.ones(90), np.zeros(90)), x4),
            (2, 3, 6, 5),
        ),
        (
            "BatchNormalization-per-channel",
            lambda: _forwarded(
                nnlayers.BatchNormalization(np.ones(3), np.zeros(3), per_channel=True), x4
            ),
            (2, 3, 6, 5),
        ),
        ("Relu", lambda: _forwarded(nnlayers.Relu(), x2), (4, 5)),
        ("Sigmoid", lambda: _forwarded(nnlayers.Sigmoid(), x2), (4, 5)),
        ("Affine", lambda: _forwarded(nnlayers.Affine(np.ones((5, 2)), 0), x2), (4, 2)),
        ("Dropout", lambda: _forwarded(nnlayers.Dropout(0.5), x2), (4, 5)),
    ]


TRAINED = _trained_layers()


@pytest.mark.parametrize("make, shape", [pytest.param(m, s, id=i) for i, m, s in TRAINED])
@pytest.mark.parametrize("change", ["bigger-last-axis", "dropped-axis", "swapped"])
def test_backward_dout_shape_must_match_the_last_forward(make, shape, change, forbid_kernels):
    layer = make()
    if change == "bigger-last-axis":
        bad = shape[:-1] + (shape[-1] + 1,)
    elif change == "dropped-axis":
        bad = shape[1:]
    else:
        bad = shape[::-1] if shape[::-1] != shape else shape + (1,)
    forbid_kernels()
    with pytest.raises(ValueError, match=r"dout must have the shape of the last forward"):
        layer.backward(np.ones(bad))


@pytest.mark.parametrize("make, shape", [pytest.param(m, s, id=i) for i, m, s in TRAINED])
@pytest.mark.parametrize("bad", ["complex", "string"])
def test_backward_dout_must_be_real(make, shape, bad, forbid_kernels):
    layer = make()
    dout = np.ones(shape, dtype=complex) if bad == "complex" else np.full(shape, "a")
    forbid_kernels()
    with pytest.raises(TypeError, match=r"\bdout must be a real numeric array"):
        layer.backward(dout)


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(lambda: conv(), id="Convolution"),
        pytest.param(lambda: nnlayers.Pooling(2, 2, 2), id="Pooling"),
        pytest.param(
            lambda: nnlayers.BatchNormalization(np.ones(3), np.zeros(3)), id="BatchNormalization"
        ),
        pytest.param(lambda: nnlayers.Relu(), id="Relu"),
        pytest.param(lambda: nnlayers.Sigmoid(), id="Sigmoid"),
        pytest.param(lambda: nnlayers.Affine(np.ones((5, 2)), 0), id="Affine"),
        pytest.param(lambda: nnlayers.Dropout(), id="Dropout"),
        pytest.param(lambda: nnlayers.SoftmaxWithLoss(), id="SoftmaxWithLoss"),
    ],
)
def test_backward_before_forward(layer, forbid_kernels):
    obj = layer()
    forbid_kernels()
    with pytest.raises(
        ValueError, match=rf"{type(obj).__name__}\.backward\(\) called before forward\(\)"
    ):
        obj.backward(np.ones((2, 3)))


def test_batchnorm_backward_after_test_mode_forward_only():
    layer = nnlayers.BatchNormalization(np.ones(3), np.zeros(3))
    layer.forward(np.ones((2, 3)), train_flg=False)
    with pytest.raises(ValueError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.ones((2, 3)))


def test_a_failed_forward_leaves_the_previous_state_usable():
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 5))
    layer = conv()
    out = layer.forward(x)
    with pytest.raises(ValueError):
        layer.forward(x[:, :2])
    dx = layer.backward(np.ones_like(out))  # still the first forward's geometry
    assert dx.shape == x.shape


def test_conv_complex_weights_error_names_W(forbid_kernels):
    layer = conv(W=np.ones((4, 3, 3, 3), dtype=complex))
    forbid_kernels()
    with pytest.raises(TypeError, match=r"\bW\b"):
        layer.forward(X4)


def test_nnlayers_im2col_error_names_input_data():
    with pytest.raises(TypeError, match=r"input_data"):
        nnlayers.im2col(COMPLEX, 2, 2)


# ------------------------------------------------------------------ integers out of range
HUGE = [2**31, 2**63, 2**64, np.uint64(2**64 - 1), -(2**63)]
IMAGE = np.ones((1, 2, 6, 6))
INTEGER_ARGUMENTS = [  # (argument, call with the value)
    ("stride", lambda v: nnlayers.Convolution(W4[:, :2], B4, stride=v).forward(IMAGE)),
    ("pad", lambda v: nnlayers.Convolution(W4[:, :2], B4, pad=v).forward(IMAGE)),
    ("pool_h", lambda v: nnlayers.Pooling(v, 2, 2).forward(IMAGE)),
    ("pool_w", lambda v: nnlayers.Pooling(2, v, 2).forward(IMAGE)),
    ("stride", lambda v: nnlayers.Pooling(2, 2, v).forward(IMAGE)),
    ("pad", lambda v: nnlayers.Pooling(3, 3, 1, v).forward(IMAGE)),
    ("filter_h", lambda v: nnlayers.im2col(IMAGE, v, 2)),
    ("filter_w", lambda v: nnlayers.im2col(IMAGE, 2, v)),
    ("stride", lambda v: nnlayers.im2col(IMAGE, 2, 2, v)),
    ("pad", lambda v: nnlayers.im2col(IMAGE, 2, 2, 1, v)),
    ("stride", lambda v: nnlayers.col2im(np.ones((25, 8)), (1, 2, 6, 6), 2, 2, v)),
    ("input_shape", lambda v: nnlayers.col2im(np.ones((25, 8)), (1, 2, v, 6), 2, 2)),
    ("stride", lambda v: nnlayers.conv_output_size(6, 2, v)),
    ("threads", lambda v: nnkernels.matmul(np.ones((2, 2)), np.ones((2, 2)), threads=v)),
    ("n_parts", lambda v: nnkernels.conv_forward(IMAGE, W4[:, :2], B4, n_parts=v)),
]


@pytest.mark.parametrize("value", HUGE, ids=str)
@pytest.mark.parametrize(
    "name, call",
    INTEGER_ARGUMENTS,
    ids=[f"{i}-{name}" for i, (name, _) in enumerate(INTEGER_ARGUMENTS)],
)
def test_integers_out_of_range_are_refused_by_name(name, call, value, forbid_kernels):
    """2**63 gave a bare OverflowError and 2**64 a Numba TypingError, depending on which
    kernels were compiled; every integer argument is range-checked first."""
    if name == "n_parts" and not nnkernels.conv_kernels_available():
        pytest.skip("no fused kernels here")
    forbid_kernels()
    with pytest.raises(ValueError, match=rf"{name}.* must be (at most|>=)"):
        call(value)


# ------------------------------------------------------------------ array subclasses
MATRIX_CALLS = [
    ("Relu", lambda x: nnlayers.Relu().forward(x)),
    ("Sigmoid", lambda x: nnlayers.Sigmoid().forward(x)),
    ("Affine", lambda x: nnlayers.Affine(np.ones((3, 2)), 0.5).forward(x)),
    ("Dropout test mode", lambda x: nnlayers.Dropout().forward(x, False)),
    (
        "BatchNormalization",
        lambda x: nnlayers.BatchNormalization(np.ones(3), np.zeros(3)).forward(x),
    ),
    ("SoftmaxWithLoss", lambda x: nnlayers.SoftmaxWithLoss().forward(x, [0, 2])),
    ("softmax", nnlayers.softmax),
]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("name, call", MATRIX_CALLS, ids=[name for name, _ in MATRIX_CALLS])
def test_numpy_matrix_input_gives_the_plain_arrays_result(name, call):
    """np.matrix into Relu gave a Numba TypingError; a subclass is viewed as a plain array."""
    matrix = np.matrix([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    got, want = call(matrix), call(np.asarray(matrix))
    assert type(got) is type(want)
    np.testing.assert_array_equal(got, want)


def test_memmap_input_is_read_as_a_plain_array(tmp_path):
    data = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=X4.shape)
    data[:] = np.arange(X4.size).reshape(X4.shape) - 30
    layer, plain = conv(), conv()
    out = layer.forward(data)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, plain.forward(np.array(data)))


MASKED = np.ma.masked_array(np.ones((2, 3, 6, 5)), mask=np.zeros((2, 3, 6, 5), bool))


@pytest.mark.parametrize(
    "call",
    [
        lambda: nnlayers.Relu().forward(MASKED),
        lambda: conv().forward(MASKED),
        lambda: nnlayers.Pooling(2, 2, 2).forward(MASKED),
        lambda: nnlayers.Affine(np.ones((90, 2)), 0).forward(MASKED),
        lambda: nnlayers.im2col(MASKED, 2, 2),
        lambda: nnkernels.matmul(MASKED[0, 0], np.ones((5, 2))),
    ],
)
def test_masked_arrays_are_refused_clearly(call, forbid_kernels):
    forbid_kernels()
    with pytest.raises(TypeError, match=r"must be a plain array, got a masked array"):
        call()


def test_out_of_range_labels_differ_from_the_reference_on_purpose():
    # README, "Where it differs from the reference": the reference scores label -1 as the
    # last class and fails on a label of 10 with an IndexError from inside the layer
    import nnlayers.reference as ref

    x = np.random.default_rng(3).standard_normal((2, 10))
    last = ref.SoftmaxWithLoss().forward(x, np.array([4, 9]))
    assert ref.SoftmaxWithLoss().forward(x, np.array([4, -1])) == last
    with pytest.raises(IndexError):
        ref.SoftmaxWithLoss().forward(x, np.array([4, 10]))
    for label in (-1, 10):
        message = rf"^t: label {label} at position 1 is out of range for 10 classes"
        with pytest.raises(ValueError, match=message):
            nnlayers.SoftmaxWithLoss().forward(x, np.array([4, label]))
