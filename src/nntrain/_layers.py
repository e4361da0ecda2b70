"""Resolve the module that provides the layer classes a network is built from.

Networks take ``layers=`` (keyword-only): a module exposing the reference API names
(``Relu, Sigmoid, Affine, SoftmaxWithLoss, Dropout, BatchNormalization, Convolution,
Pooling, numerical_gradient``). ``None`` means the ``nnlayers`` package, imported only
when a network is built, so ``import nntrain`` never needs it.
"""

import importlib
import types

REQUIRED_NAMES = (
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
    "numerical_gradient",
)

_ALIASES = {
    "nnlayers": "nnlayers",
    "fast": "nnlayers",
    "reference": "nnlayers.reference",
    "nnlayers.reference": "nnlayers.reference",
}


def resolve_layers(layers=None):
    """Return the layer module for ``layers``.

    ``layers`` may be ``None`` (the ``nnlayers`` package), a module (or any object with
    the required attributes), or one of the strings ``"nnlayers"``/``"fast"`` and
    ``"reference"``/``"nnlayers.reference"``.
    """
    if layers is None:
        layers = "nnlayers"
    if isinstance(layers, str):
        if layers not in _ALIASES:
            raise ValueError(
                f"layers: expected a module or one of {sorted(_ALIASES)}, got {layers!r}"
            )
        module = importlib.import_module(_ALIASES[layers])
    else:
        module = layers
    missing = [name for name in REQUIRED_NAMES if not hasattr(module, name)]
    if missing:
        label = getattr(module, "__name__", type(module).__name__)
        hint = (
            "; pass layers=nnlayers.reference (pure NumPy) until the fast layers exist"
            if label == "nnlayers"
            else ""
        )
        raise TypeError(f"layers: module {label!r} lacks {', '.join(missing)}{hint}")
    return module


def layers_name(module):
    """A short printable name for a layer module."""
    if isinstance(module, types.ModuleType):
        return module.__name__
    return type(module).__name__
