"""The book's networks, built from a swappable layer module.

Every network keeps ``params`` (a dict of ndarrays keyed ``W1, b1, ...`` and, with batch
normalisation, ``gamma1, beta1, ...``) whose arrays are the very objects the layers hold,
so optimizers update them in place. Constructors follow the book's signatures; extra
keyword-only arguments are:

* ``layers``: the module providing the layer classes and ``numerical_gradient``
  (default: the ``nnlayers`` package; ``nnlayers.reference`` is the pure-NumPy oracle);
* ``dtype``: parameter dtype, float64 (default, as the book) or float32;
* ``rng``: weight-init randomness. ``None`` draws from the global ``np.random`` like the
  book (so ``np.random.seed(s)`` reproduces the book's init exactly); an int seeds a
  ``np.random.default_rng``; a ``Generator`` or ``RandomState`` is used as is.

Inputs are ``(N, C, H, W)`` images for the conv nets, ``(N, D)`` (or anything that
flattens to it) for the multi-layer nets; labels are integer class ids ``(N,)`` or
one-hot ``(N, classes)``.
"""

import importlib
import types
from collections import OrderedDict

import numpy as np

from ._io import (
    LoadError,
    checked_array,
    checked_arrays,
    display_name,
    load_file,
    save_file,
    values_budget,
)
from ._layers import resolve_layers

__all__ = ["SimpleConvNet", "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend"]


# ---------------------------------------------------------------- helpers
def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def _as_rng(rng):
    """Return an object with a ``randn``-like ``normal(shape)`` callable."""
    if rng is None:
        return lambda shape: np.random.randn(*shape)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if isinstance(rng, np.random.Generator):
        return lambda shape: rng.standard_normal(shape)
    if isinstance(rng, np.random.RandomState):
        return lambda shape: rng.randn(*shape)
    raise TypeError(
        "rng: expected None, an int seed, a numpy Generator or RandomState, "
        f"got {type(rng).__name__}"
    )


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _check_input_dim(input_dim):
    if not isinstance(input_dim, (tuple, list)) or len(input_dim) != 3:
        raise ValueError(f"input_dim: expected (channels, height, width), got {input_dim!r}")
    return tuple(_positive_int("input_dim", v) for v in input_dim)


def _conv_param(name, param):
    try:
        filter_num = _positive_int(f"{name}['filter_num']", param["filter_num"])
        filter_size = _positive_int(f"{name}['filter_size']", param["filter_size"])
        stride = _positive_int(f"{name}['stride']", param["stride"])
        pad = int(param["pad"])
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{name}: expected a dict with filter_num, filter_size, pad, stride, got {param!r}"
        ) from exc
    if pad < 0:
        raise ValueError(f"{name}['pad']: expected >= 0, got {pad}")
    return filter_num, filter_size, pad, stride


def _conv_out(name, size, filter_size, pad, stride):
    out = (size + 2 * pad - filter_size) // stride + 1
    if out <= 0:
        raise ValueError(
            f"{name}: filter {filter_size} with pad {pad} does not fit input size {size}"
        )
    return out


def _pool_out(name, size):
    if size < 2:
        raise ValueError(f"{name}: 2x2 pooling needs an input of at least 2x2, got size {size}")
    return (size - 2) // 2 + 1


def _labels(t):
    t = np.asarray(t)
    return np.argmax(t, axis=1) if t.ndim != 1 else t


# ---------------------------------------------------------------- base
class _Network:
    """Shared machinery: parameter slots, gradient collection, accuracy, save/load.

    Subclasses set ``self.params``, ``self.last_layer`` and ``self._slots``: a list of
    ``(param_key, layer, attribute)`` tying each parameter to the layer attribute holding
    it (``W``, ``b``, ``gamma`` or ``beta``; its gradient lives in ``d`` + attribute).
    """

    def _setup(self, layers, dtype, rng):
        self._layers = resolve_layers(layers)
        self.dtype = _check_dtype(dtype)
        self._normal = _as_rng(rng)
        self.params = {}
        self.last_loss = None

    def __getstate__(self):
        # the layer module by name (modules do not pickle); the initialiser is spent
        state = dict(self.__dict__)
        state.pop("_normal", None)
        if isinstance(self._layers, types.ModuleType):
            state["_layers"] = self._layers.__name__
        return state

    def __setstate__(self, state):
        if isinstance(state.get("_layers"), str):
            state = dict(state, _layers=importlib.import_module(state["_layers"]))
        self.__dict__.update(state)

    def _randn(self, scale, shape):
        return (scale * self._normal(shape)).astype(self.dtype, copy=False)

    def _zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    # -- forward pieces supplied by subclasses
    def _layer_sequence(self):
        raise NotImplementedError

    def _training_loss(self, x, t):
        """The loss whose gradient ``gradient``/``numerical_gradient`` compute."""
        return self.loss(x, t)

    def _extra_grad(self, key):
        """Added to the layer gradient of ``key`` (weight decay); ``None`` for nothing."""
        return None

    # -- public API
    def accuracy(self, x, t, batch_size=100):
        """Fraction of correct argmax predictions, evaluated in batches of ``batch_size``.

        Unlike the book, samples beyond the last full batch are evaluated too.
        """
        batch_size = _positive_int("batch_size", batch_size)
        t = _labels(t)
        if x.shape[0] != t.shape[0]:
            raise ValueError(f"x and t: sample counts differ ({x.shape[0]} vs {t.shape[0]})")
        if x.shape[0] == 0:
            raise ValueError("x: expected at least one sample, got 0")
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            y = self.predict(x[start : start + batch_size])
            correct += int(np.sum(np.argmax(y, axis=1) == t[start : start + batch_size]))
        return correct / x.shape[0]

    def gradient(self, x, t):
        """Backpropagation gradients, a dict with the keys of ``params``.

        The loss of this forward pass is kept in ``self.last_loss``.
        """
        self.last_loss = self._training_loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self._layer_sequence()):
            dout = layer.backward(dout)
        grads = {}
        for key, layer, attr in self._slots:
            grad = getattr(layer, "d" + attr)
            extra = self._extra_grad(key)
            grads[key] = grad if extra is None else grad + extra
        return grads

    def numerical_gradient(self, x, t):
        """Central-difference gradients of the training loss w.r.t. every parameter (slow)."""
        numerical = self._layers.numerical_gradient
        loss = lambda _: self._training_loss(x, t)  # noqa: E731
        return {key: numerical(loss, self.params[key]) for key in self.params}

    def _bind_params(self):
        for key, layer, attr in self._slots:
            setattr(layer, attr, self.params[key])

    def save_params(self, file_name="params.pkl"):
        """Write ``params`` atomically to ``file_name``: the book's pickled dict of arrays,
        or a NumPy ``.npz`` archive (no pickle) when the name ends in ``.npz``."""
        save_file(dict(self.params), file_name)

    def load_params(
        self, file_name="params.pkl", *, trusted=False, strict=True, allow_nonfinite=False
    ):
        """Load weights saved by ``save_params`` or the book, and rebind the layers to them.

        Parameters
        ----------
        file_name : str or os.PathLike
            A ``.npz`` archive or a pickled dict of arrays (the book's format).
        trusted : bool
            Unpickle with plain :func:`pickle.load`, which can run arbitrary code; by
            default only dicts, lists, tuples, strings, numbers, ``None`` and NumPy
            arrays are unpickled.
        strict, allow_nonfinite : bool
            As in :meth:`set_params`.

        Raises
        ------
        nntrain.LoadError
            The file is damaged, holds a refused object, does not fit this network, or
            needs more memory than three times this network's parameters at 8 bytes each
            plus 1 MiB; the parameters are then unchanged.
        """
        count = sum(value.size for value in self.params.values())
        self.set_params(
            load_file(
                file_name,
                trusted=trusted,
                budget=values_budget(count, f"this network's {count} parameters"),
                only=set(self.params),
            ),
            source=display_name(file_name),
            strict=strict,
            allow_nonfinite=allow_nonfinite,
        )

    def set_params(self, params, *, source="params", strict=True, allow_nonfinite=False):
        """Replace the parameters from a dict of arrays, checking all of them first.

        Parameters
        ----------
        params : dict
            ``{key: floating-point array}`` with this network's keys and shapes; values
            are copied and converted to its dtype. Nested lists are checked against the
            key's shape before they are converted.
        source : str
            Named in error messages.
        strict : bool
            Refuse keys this network does not have (``False``: ignore them).
        allow_nonfinite : bool
            Accept NaN and infinite values.

        Raises
        ------
        nntrain.LoadError
            Names the key, what was expected and what was found; nothing is changed.
        """
        new = checked_arrays(
            params, self.params, source=source, strict=strict, allow_nonfinite=allow_nonfinite
        )
        self.params.update(new)
        self._bind_params()

    # -- state beyond params (batch-norm running statistics), for checkpoints
    def buffers(self):
        """Non-trainable state (batch-norm running mean/var), as a dict of array copies."""
        out = {}
        for key, (layer, attr) in self._buffer_slots().items():
            value = getattr(layer, attr)
            out[key] = None if value is None else np.array(value)
        return out

    def set_buffers(self, buffers, *, source="buffers", allow_nonfinite=False):
        """Restore ``buffers()`` output, checking every entry (``checked_buffers``) first."""
        slots = self._buffer_slots()
        for key, value in self.checked_buffers(
            buffers, source=source, allow_nonfinite=allow_nonfinite
        ).items():
            layer, attr = slots[key]
            setattr(layer, attr, value)

    def checked_buffers(self, buffers, *, source="buffers", allow_nonfinite=False):
        """Validated copies of ``buffers`` (as ``buffers()`` returns them); changes nothing.

        Each running mean/var is ``None`` (not yet computed) or a floating-point array
        shaped like the layer's current one (like its ``gamma`` while that is ``None``).

        Raises
        ------
        nntrain.LoadError
            Names the buffer, what was expected and what was found.
        """
        slots = self._buffer_slots()
        if not isinstance(buffers, dict) or set(buffers) != set(slots):
            found = sorted(buffers) if isinstance(buffers, dict) else type(buffers).__name__
            raise LoadError(f"{source}: expected batch-norm buffers {sorted(slots)}, found {found}")
        new = {}
        for key, (layer, attr) in slots.items():
            current = getattr(layer, attr)
            template = layer.gamma if current is None else current
            new[key] = (
                None
                if buffers[key] is None
                else checked_array(
                    buffers[key],
                    source=source,
                    key=f"buffer {key!r}",
                    shape=np.shape(template),
                    dtype=getattr(template, "dtype", self.dtype),
                    allow_nonfinite=allow_nonfinite,
                )
            )
        return new

    def _buffer_slots(self):
        """``{"<layer index>.running_mean": (layer, attribute), ...}``."""
        return {
            f"{name}.{attr}": (layer, attr)
            for name, layer in self._named_layers()
            if hasattr(layer, "running_mean") and hasattr(layer, "running_var")
            for attr in ("running_mean", "running_var")
        }

    def _named_layers(self):
        return [(str(i), layer) for i, layer in enumerate(self._layer_sequence())]


# ---------------------------------------------------------------- SimpleConvNet
class SimpleConvNet(_Network):
    """conv - relu - pool(2x2, stride 2) - affine - relu - affine - softmax.

    Parameters ``W1 (filter_num, C, fs, fs)``, ``b1 (filter_num,)``,
    ``W2 (filter_num*PH*PW, hidden_size)``, ``b2``, ``W3 (hidden_size, output_size)``, ``b3``,
    drawn as ``weight_init_std * randn`` (biases zero).
    """

    def __init__(
        self,
        input_dim=(1, 28, 28),
        conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},  # noqa: B006
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
        *,
        layers=None,
        dtype=np.float64,
        rng=None,
    ):
        self._setup(layers, dtype, rng)
        C, H, W = _check_input_dim(input_dim)
        filter_num, filter_size, pad, stride = _conv_param("conv_param", conv_param)
        hidden_size = _positive_int("hidden_size", hidden_size)
        output_size = _positive_int("output_size", output_size)
        conv_h = _conv_out("conv_param", H, filter_size, pad, stride)
        conv_w = _conv_out("conv_param", W, filter_size, pad, stride)
        pool_size = filter_num * _pool_out("pooling", conv_h) * _pool_out("pooling", conv_w)

        p = self.params
        p["W1"] = self._randn(weight_init_std, (filter_num, C, filter_size, filter_size))
        p["b1"] = self._zeros(filter_num)
        p["W2"] = self._randn(weight_init_std, (pool_size, hidden_size))
        p["b2"] = self._zeros(hidden_size)
        p["W3"] = self._randn(weight_init_std, (hidden_size, output_size))
        p["b3"] = self._zeros(output_size)

        L = self._layers
        self.layers = OrderedDict()
        self.layers["Conv1"] = L.Convolution(p["W1"], p["b1"], stride, pad)
        self.layers["Relu1"] = L.Relu()
        self.layers["Pool1"] = L.Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = L.Affine(p["W2"], p["b2"])
        self.layers["Relu2"] = L.Relu()
        self.layers["Affine2"] = L.Affine(p["W3"], p["b3"])
        self.last_layer = L.SoftmaxWithLoss()
        self._slots = [
            (f"{kind}{i}", self.layers[name], kind)
            for i, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1)
            for kind in ("W", "b")
        ]

    def _layer_sequence(self):
        return list(self.layers.values())

    def _named_layers(self):
        return list(self.layers.items())

    def predict(self, x):
        """Class scores ``(N, output_size)`` for images ``(N, C, H, W)``."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean softmax cross-entropy of the batch (a scalar)."""
        return self.last_layer.forward(self.predict(x), t)


# ---------------------------------------------------------------- DeepConvNet
_DEEP_DEFAULTS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


class DeepConvNet(_Network):
    """Six 3x3 conv-relu layers with a 2x2 pool after every second, then
    affine - relu - dropout - affine - dropout - softmax; He initialisation.

    ``layers`` (the attribute) is a list; the layers holding ``W1..W8`` sit at indices
    0, 2, 5, 7, 10, 12, 15, 18 as in the book. The first affine's input size is computed
    from ``input_dim`` (``64*4*4`` for 28x28 input, as the book hard-codes).

    ``loss``, ``gradient`` and ``numerical_gradient`` run in training mode, so every call
    draws fresh dropout masks (from ``np.random``, in the book's layers); compare
    gradients only with equal seeds or with the Dropout layers' ``dropout_ratio`` at 0.
    """

    _WEIGHT_LAYER_INDICES = (0, 2, 5, 7, 10, 12, 15, 18)

    def __init__(
        self,
        input_dim=(1, 28, 28),
        conv_param_1=_DEEP_DEFAULTS[0],
        conv_param_2=_DEEP_DEFAULTS[1],
        conv_param_3=_DEEP_DEFAULTS[2],
        conv_param_4=_DEEP_DEFAULTS[3],
        conv_param_5=_DEEP_DEFAULTS[4],
        conv_param_6=_DEEP_DEFAULTS[5],
        hidden_size=50,
        output_size=10,
        *,
        layers=None,
        dtype=np.float64,
        rng=None,
    ):
        self._setup(layers, dtype, rng)
        C, H, W = _check_input_dim(input_dim)
        hidden_size = _positive_int("hidden_size", hidden_size)
        output_size = _positive_int("output_size", output_size)
        convs = [
            _conv_param(f"conv_param_{i}", p)
            for i, p in enumerate(
                (
                    conv_param_1,
                    conv_param_2,
                    conv_param_3,
                    conv_param_4,
                    conv_param_5,
                    conv_param_6,
                ),
                start=1,
            )
        ]

        # shapes through the stack, and each weight's fan-in for He init
        pre_node_nums = []
        channels, h, w = C, H, W
        for i, (num, size, pad, stride) in enumerate(convs, start=1):
            pre_node_nums.append(channels * size * size)
            h = _conv_out(f"conv_param_{i}", h, size, pad, stride)
            w = _conv_out(f"conv_param_{i}", w, size, pad, stride)
            channels = num
            if i % 2 == 0:
                h, w = (
                    _pool_out(f"pooling after conv {i}", h),
                    _pool_out(f"pooling after conv {i}", w),
                )
        flat = channels * h * w
        pre_node_nums += [flat, hidden_size]
        scales = np.sqrt(2.0 / np.array(pre_node_nums))

        p = self.params
        channels = C
        for i, (num, size, _, _) in enumerate(convs, start=1):
            p[f"W{i}"] = self._randn(scales[i - 1], (num, channels, size, size))
            p[f"b{i}"] = self._zeros(num)
            channels = num
        p["W7"] = self._randn(scales[6], (flat, hidden_size))
        p["b7"] = self._zeros(hidden_size)
        p["W8"] = self._randn(scales[7], (hidden_size, output_size))
        p["b8"] = self._zeros(output_size)

        L = self._layers
        self.layers = []
        for i, (_, _, pad, stride) in enumerate(convs, start=1):
            self.layers.append(L.Convolution(p[f"W{i}"], p[f"b{i}"], stride, pad))
            self.layers.append(L.Relu())
            if i % 2 == 0:
                self.layers.append(L.Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers.append(L.Affine(p["W7"], p["b7"]))
        self.layers.append(L.Relu())
        self.layers.append(L.Dropout(0.5))
        self.layers.append(L.Affine(p["W8"], p["b8"]))
        self.layers.append(L.Dropout(0.5))
        self.last_layer = L.SoftmaxWithLoss()
        self._slots = [
            (f"{kind}{i}", self.layers[index], kind)
            for i, index in enumerate(self._WEIGHT_LAYER_INDICES, start=1)
            for kind in ("W", "b")
        ]

    def _layer_sequence(self):
        return self.layers

    def predict(self, x, train_flg=False):
        """Class scores; ``train_flg`` switches the Dropout layers to training mode."""
        dropout = self._layers.Dropout
        for layer in self.layers:
            x = layer.forward(x, train_flg) if isinstance(layer, dropout) else layer.forward(x)
        return x

    def loss(self, x, t):
        """Training-mode loss (dropout active), as in the book."""
        return self.last_layer.forward(self.predict(x, train_flg=True), t)


# ---------------------------------------------------------------- multi-layer nets
def _init_scale(weight_init_std, fan_in):
    kind = str(weight_init_std).lower()
    if kind in ("relu", "he"):
        return np.sqrt(2.0 / fan_in)
    if kind in ("sigmoid", "xavier"):
        return np.sqrt(1.0 / fan_in)
    try:
        return float(weight_init_std)
    except (TypeError, ValueError):
        raise ValueError(
            "weight_init_std: expected 'relu', 'he', 'sigmoid', 'xavier' or a number, "
            f"got {weight_init_std!r}"
        ) from None


class MultiLayerNet(_Network):
    """Fully connected net: (Affine - activation) x len(hidden_size_list) - Affine - softmax.

    ``W{i}`` has shape ``(sizes[i-1], sizes[i])`` with sizes ``[input_size, *hidden, output]``.
    ``weight_decay_lambda`` adds ``0.5*lambda*sum(W**2)`` per weight to the loss and
    ``lambda*W`` to its gradient.
    """

    def __init__(
        self,
        input_size,
        hidden_size_list,
        output_size,
        activation="relu",
        weight_init_std="relu",
        weight_decay_lambda=0,
        *,
        layers=None,
        dtype=np.float64,
        rng=None,
    ):
        self._setup(layers, dtype, rng)
        self._build(
            input_size,
            hidden_size_list,
            output_size,
            activation,
            weight_init_std,
            weight_decay_lambda,
        )

    def _build(
        self,
        input_size,
        hidden_size_list,
        output_size,
        activation,
        weight_init_std,
        weight_decay_lambda,
        use_dropout=False,
        dropout_ration=0.5,
        use_batchnorm=False,
    ):
        self.input_size = _positive_int("input_size", input_size)
        self.output_size = _positive_int("output_size", output_size)
        self.hidden_size_list = [_positive_int("hidden_size_list", h) for h in hidden_size_list]
        self.hidden_layer_num = len(self.hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        self.use_dropout = use_dropout
        self.use_batchnorm = use_batchnorm
        L = self._layers
        activations = {"relu": L.Relu, "sigmoid": L.Sigmoid}
        if activation not in activations:
            raise ValueError(f"activation: expected 'relu' or 'sigmoid', got {activation!r}")

        sizes = [self.input_size] + self.hidden_size_list + [self.output_size]
        p = self.params
        for idx in range(1, len(sizes)):
            p[f"W{idx}"] = self._randn(
                _init_scale(weight_init_std, sizes[idx - 1]), (sizes[idx - 1], sizes[idx])
            )
            p[f"b{idx}"] = self._zeros(sizes[idx])

        self.layers = OrderedDict()
        self._slots = []
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = L.Affine(p[f"W{idx}"], p[f"b{idx}"])
            self._slots += [
                (f"W{idx}", self.layers[f"Affine{idx}"], "W"),
                (f"b{idx}", self.layers[f"Affine{idx}"], "b"),
            ]
            if use_batchnorm:
                size = sizes[idx]
                p[f"gamma{idx}"] = np.ones(size, dtype=self.dtype)
                p[f"beta{idx}"] = self._zeros(size)
                bn = L.BatchNormalization(
                    p[f"gamma{idx}"],
                    p[f"beta{idx}"],
                    running_mean=self._zeros(size),
                    running_var=self._zeros(size),
                )
                self.layers[f"BatchNorm{idx}"] = bn
                self._slots += [(f"gamma{idx}", bn, "gamma"), (f"beta{idx}", bn, "beta")]
            self.layers[f"Activation_function{idx}"] = activations[activation]()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = L.Dropout(dropout_ration)
        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = L.Affine(p[f"W{idx}"], p[f"b{idx}"])
        self._slots += [
            (f"W{idx}", self.layers[f"Affine{idx}"], "W"),
            (f"b{idx}", self.layers[f"Affine{idx}"], "b"),
        ]
        self.last_layer = L.SoftmaxWithLoss()

    def _layer_sequence(self):
        return list(self.layers.values())

    def _named_layers(self):
        return list(self.layers.items())

    def _weight_decay(self):
        if not self.weight_decay_lambda:
            return 0
        total = 0
        for idx in range(1, self.hidden_layer_num + 2):
            total += 0.5 * self.weight_decay_lambda * np.sum(self.params[f"W{idx}"] ** 2)
        return total

    def _extra_grad(self, key):
        if self.weight_decay_lambda and key.startswith("W"):
            return self.weight_decay_lambda * self.params[key]
        return None

    def predict(self, x):
        """Class scores ``(N, output_size)``."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Softmax cross-entropy plus weight decay."""
        return self.last_layer.forward(self.predict(x), t) + self._weight_decay()

    def accuracy(self, x, t, batch_size=None):
        """Fraction of correct predictions; ``batch_size=None`` evaluates all at once."""
        return super().accuracy(x, t, batch_size=batch_size or max(len(x), 1))


class MultiLayerNetExtend(MultiLayerNet):
    """MultiLayerNet with optional BatchNorm (between Affine and activation, params
    ``gamma{i}`` ones / ``beta{i}`` zeros) and Dropout (after the activation).

    ``predict``/``loss`` take ``train_flg`` and pass it to the layers whose name contains
    "Dropout" or "BatchNorm"; ``gradient`` uses the training mode.
    """

    def __init__(
        self,
        input_size,
        hidden_size_list,
        output_size,
        activation="relu",
        weight_init_std="relu",
        weight_decay_lambda=0,
        use_dropout=False,
        dropout_ration=0.5,
        use_batchnorm=False,
        *,
        layers=None,
        dtype=np.float64,
        rng=None,
    ):
        self._setup(layers, dtype, rng)
        self._build(
            input_size,
            hidden_size_list,
            output_size,
            activation,
            weight_init_std,
            weight_decay_lambda,
            use_dropout,
            dropout_ration,
            use_batchnorm,
        )

    def predict(self, x, train_flg=False):
        for key, layer in self.layers.items():
            if "Dropout" in key or "BatchNorm" in key:
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        return self.last_layer.forward(self.predict(x, train_flg), t) + self._weight_decay()

    def _training_loss(self, x, t):
        return self.loss(x, t, train_flg=True)
