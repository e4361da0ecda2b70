"""The search space: which training options a sweep samples, and from what.

A space maps parameter names to specs. On the command line a spec is ``NAME=SPEC`` with
``SPEC`` one of::

    log:LOW:HIGH        float, log-uniform (LOW > 0)      lr=log:1e-6:1e-2
    float:LOW:HIGH      float, uniform                    dropout=float:0:0.5
    int:LOW:HIGH        int, uniform, both ends included  hidden_size=int:50:200
    logint:LOW:HIGH     int, log-uniform (LOW > 0)        batch_size=logint:16:256
    choice:A,B,...      one of the values                 optimizer=choice:sgd,adam
    VALUE               fixed                             hidden_layers=6

In a TOML file (``--space FILE``), the table ``[space]`` holds the same specs, either as
the command-line strings or as ``{log = [LOW, HIGH]}``, ``{choice = [...]}`` and plain
values. Command-line ``--param`` entries override the file's.
"""

import math

from ..optimizers import OPTIMIZERS

__all__ = ["PARAMETERS", "MLP_ONLY", "SearchSpace", "SpaceError", "parse_param", "load_toml"]

KINDS = ("log", "float", "int", "logint", "choice")


class SpaceError(ValueError):
    """A search-space mistake; the message names the option and the parameter."""


def _parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _optimizer_name(text):
    name = str(text).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"expected one of {sorted(OPTIMIZERS)}, got {text!r}")
    return name


#: name -> (type converter, lowest allowed value or None, is the lowest value excluded?)
PARAMETERS = {
    "lr": (float, 0.0, True),
    "weight_decay": (float, 0.0, False),
    "optimizer": (_optimizer_name, None, None),
    "batch_size": (int, 1, False),
    "hidden_size": (int, 1, False),
    "hidden_layers": (int, 1, False),
    "dropout": (float, 0.0, False),
    "batchnorm": (_parse_bool, None, None),
}
#: parameters only the multi-layer net (``--model mlp``) has
MLP_ONLY = ("weight_decay", "hidden_size", "hidden_layers", "dropout", "batchnorm")
_UPPER = {"dropout": (1.0, True)}  # dropout ratio must stay below 1


def _convert(name, value, option):
    convert = PARAMETERS[name][0]
    try:
        if convert is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        if convert is int and isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise SpaceError(f"{option}: {name}: {exc}") from None


def _check_domain(name, value, option):
    _, lowest, exclusive = PARAMETERS[name]
    if lowest is None:
        return
    if not math.isfinite(value) or value < lowest or (exclusive and value == lowest):
        relation = ">" if exclusive else ">="
        raise SpaceError(f"{option}: {name} must be {relation} {lowest}, got {value!r}")
    if name in _UPPER and value >= _UPPER[name][0]:
        raise SpaceError(f"{option}: {name} must be < {_UPPER[name][0]}, got {value!r}")


class Dimension:
    """One parameter's spec: ``kind`` in ``KINDS`` or ``"fixed"``, with its bounds/values."""

    def __init__(self, name, kind, values, option):
        if name not in PARAMETERS:
            raise SpaceError(
                f"{option}: unknown parameter {name!r}; known: {', '.join(PARAMETERS)}"
            )
        self.name, self.kind = name, kind
        if kind == "fixed":
            self.values = [_convert(name, values[0], option)]
        elif kind == "choice":
            if not values:
                raise SpaceError(f"{option}: {name}: choice needs at least one value")
            self.values = [_convert(name, v, option) for v in values]
        else:
            if len(values) != 2:
                raise SpaceError(f"{option}: {name}: {kind} needs LOW:HIGH, got {values!r}")
            convert = PARAMETERS[name][0]
            if convert not in (int, float):
                raise SpaceError(f"{option}: {name} takes choice:... or a fixed value")
            if (convert is int) != (kind in ("int", "logint")):
                what, hint = (
                    ("an integer", "int or logint")
                    if convert is int
                    else ("a real", "log or float")
                )
                raise SpaceError(f"{option}: {name} is {what} parameter; use {hint}")
            low, high = (_convert(name, v, option) for v in values)
            if not low < high:
                raise SpaceError(f"{option}: {name}: low must be < high, got {low} >= {high}")
            if kind in ("log", "logint") and low <= 0:
                raise SpaceError(
                    f"{option}: {name}: a log range needs a positive low bound, got {low}"
                )
            self.values = [low, high]
        for value in self.values:
            if not isinstance(value, (bool, str)):
                _check_domain(name, value, option)

    def suggest(self, trial):
        """Draw this parameter for an Optuna ``trial``."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, self.values)
        low, high = self.values
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.name, low, high, log=self.kind == "logint")
        return trial.suggest_float(self.name, low, high, log=self.kind == "log")

    def describe(self):
        if self.kind == "fixed":
            return repr(self.values[0])
        if self.kind == "choice":
            return "choice:" + ",".join(str(v) for v in self.values)
        return f"{self.kind}:{self.values[0]:g}:{self.values[1]:g}"


def parse_param(text, option="--param"):
    """``'lr=log:1e-6:1e-2'`` -> ``Dimension``."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or not spec:
        raise SpaceError(f"{option}: expected NAME=SPEC (e.g. lr=log:1e-6:1e-2), got {text!r}")
    return _dimension_from_spec(name, spec.strip(), f"{option} {text}")


def _dimension_from_spec(name, spec, option):
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        values = rest.split(",") if kind == "choice" else rest.split(":")
        return Dimension(name, kind, [v.strip() for v in values], option)
    return Dimension(name, "fixed", [spec], option)


def _dimension_from_toml(name, value, option):
    if isinstance(value, str):
        return _dimension_from_spec(name, value, option)
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in KINDS:
            raise SpaceError(
                f"{option}: {name}: expected one of {{{', '.join(KINDS)} = ...}}, got {value!r}"
            )
        kind, values = next(iter(value.items()))
        if not isinstance(values, list):
            raise SpaceError(f"{option}: {name}: {kind} expects a list, got {values!r}")
        return Dimension(name, kind, values, option)
    return Dimension(name, "fixed", [value], option)


def load_toml(path):
    """The dimensions of the ``[space]`` table in the TOML file ``path``."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise SpaceError(
                "--space: reading TOML on Python < 3.11 needs tomli: pip install 'nnkernels[sweep]'"
            ) from None
    option = f"--space {path}"
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise SpaceError(f"{option}: cannot read the file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{option}: not valid TOML ({exc})") from None
    table = document.get("space")
    if not isinstance(table, dict):
        raise SpaceError(f"{option}: expected a [space] table")
    return [_dimension_from_toml(name, value, option) for name, value in table.items()]


class SearchSpace:
    """An ordered set of dimensions; ``suggest(trial)`` returns a dict of parameters."""

    def __init__(self, dimensions=()):
        self.dimensions = {}
        for dimension in dimensions:
            self.dimensions[dimension.name] = dimension

    def update(self, dimensions):
        for dimension in dimensions:
            self.dimensions[dimension.name] = dimension

    def check_model(self, model):
        """Refuse parameters that ``model`` does not have."""
        if model == "mlp":
            return
        extra = [name for name in self.dimensions if name in MLP_ONLY]
        if extra:
            raise SpaceError(
                f"--param: {', '.join(extra)} only apply to --model mlp (got --model {model})"
            )

    def suggest(self, trial):
        return {name: dim.suggest(trial) for name, dim in self.dimensions.items()}

    def fixed(self):
        """The parameters when every dimension is fixed (for ``nntrain repeat``)."""
        varying = [d.name for d in self.dimensions.values() if d.kind != "fixed"]
        if varying:
            raise SpaceError(
                f"--param: repeat takes fixed values only; {', '.join(varying)} "
                "is a range or choice"
            )
        return {name: dim.values[0] for name, dim in self.dimensions.items()}

    def warm_up_params(self):
        """Parameters of a network that runs every kernel group this space's trials can:
        the fixed values, and batch norm on if any of its values turns it on."""
        params = {n: d.values[0] for n, d in self.dimensions.items() if d.kind == "fixed"}
        batchnorm = self.dimensions.get("batchnorm")
        if batchnorm is not None and any(batchnorm.values):
            params["batchnorm"] = True
        return params

    def describe(self):
        """``{name: spec string}``: stored with the study to detect a changed space."""
        return {name: dim.describe() for name, dim in self.dimensions.items()}

    def __contains__(self, name):
        return name in self.dimensions
