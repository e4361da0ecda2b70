"""The one table of benchmark shapes and, for each case, one callable per contender.

:data:`CASES` holds every layer-level shape the benchmarks time: the column kernels, conv
A/B/C, DeepConvNet's convolutions (layers 2, 7 and 12, which ``tools/`` time; not in the
comparison's default set), pooling and batch norm. :data:`NETWORKS` holds the networks of
the training-step benchmark. The comparison command, the asv suite, the step benchmark and
``tools/`` all take their shapes from here.

Contenders are ``reference`` (:mod:`nnlayers.reference`, pure NumPy), ``nnlayers`` (the
fast layers / :mod:`nnkernels`) and ``torch`` (PyTorch CPU, only when it imports). Each
callable takes no arguments and runs one forward and one backward pass on data built
once, so timing it measures the layer and nothing else. ``None`` marks a contender that
has no such operation (the reference has no per-channel batch norm).
"""

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BATCH",
    "CASES",
    "CASE_NAMES",
    "CONTENDERS",
    "DEFAULT_CASE_NAMES",
    "DTYPES",
    "IMAGE",
    "NETWORKS",
    "Case",
    "build_contenders",
    "build_network",
    "case_data",
    "cases_of_kind",
    "get_cases",
    "network_batch",
    "torch_available",
    "torch_network",
]

CONTENDERS = ("reference", "nnlayers", "torch")
DTYPES = ("float32", "float64")
# --quick shrinks every batch to this many samples (shapes otherwise unchanged)
QUICK_BATCH = 4


@dataclass(frozen=True)
class Case:
    """One benchmark shape: ``kind`` selects the operation, ``shape`` is the input (N, ...)."""

    name: str
    kind: str  # "im2col", "col2im", "conv", "pool", "bn"
    label: str
    shape: tuple
    params: dict = field(default_factory=dict)
    #: in the comparison's default set (``get_cases()``); the others are named explicitly
    default: bool = True

    def scaled(self, quick):
        """This case with the batch cut to ``QUICK_BATCH`` samples when ``quick``."""
        if not quick:
            return self
        shape = (min(self.shape[0], QUICK_BATCH),) + tuple(self.shape[1:])
        label = re.sub(r"N=\d+", f"N={shape[0]}", self.label)
        return Case(self.name, self.kind, label, shape, dict(self.params), self.default)

    @property
    def short(self):
        """The case's letter or layer within its kind: "A", "B", "C", "L2", ..."""
        return self.name.split("_", 1)[1].upper() if "_" in self.name else self.name


_CONV_C_INPUT = (64, 64, 32, 32)

CASES = (
    Case(
        "im2col",
        "im2col",
        "im2col, N=64 64x32x32, 3x3 pad 1",
        _CONV_C_INPUT,
        dict(filter=(3, 3), stride=1, pad=1),
    ),
    Case(
        "col2im",
        "col2im",
        "col2im, N=64 64x32x32, 3x3 pad 1",
        _CONV_C_INPUT,
        dict(filter=(3, 3), stride=1, pad=1),
    ),
    Case(
        "conv_a",
        "conv",
        "conv A: N=100 1x28x28, 30 5x5 pad 0",
        (100, 1, 28, 28),
        dict(filters=30, filter=(5, 5), stride=1, pad=0),
    ),
    Case(
        "conv_b",
        "conv",
        "conv B: N=100 16x14x14, 32 3x3 pad 1",
        (100, 16, 14, 14),
        dict(filters=32, filter=(3, 3), stride=1, pad=1),
    ),
    Case(
        "conv_c",
        "conv",
        "conv C: N=64 64x32x32, 64 3x3 pad 1",
        _CONV_C_INPUT,
        dict(filters=64, filter=(3, 3), stride=1, pad=1),
    ),
    # DeepConvNet's convolutions 2, 4 and 6 (layers 2, 7 and 12 of its layer list)
    Case(
        "conv_l2",
        "conv",
        "DeepConvNet layer 2: N=100 16x28x28, 16 3x3 pad 1",
        (100, 16, 28, 28),
        dict(filters=16, filter=(3, 3), stride=1, pad=1),
        default=False,
    ),
    Case(
        "conv_l7",
        "conv",
        "DeepConvNet layer 7: N=100 32x14x14, 32 3x3 pad 2",
        (100, 32, 14, 14),
        dict(filters=32, filter=(3, 3), stride=1, pad=2),
        default=False,
    ),
    Case(
        "conv_l12",
        "conv",
        "DeepConvNet layer 12: N=100 64x8x8, 64 3x3 pad 1",
        (100, 64, 8, 8),
        dict(filters=64, filter=(3, 3), stride=1, pad=1),
        default=False,
    ),
    Case(
        "pool_a",
        "pool",
        "pool A: N=100 30x24x24, 2x2 s2",
        (100, 30, 24, 24),
        dict(pool=(2, 2), stride=2),
    ),
    Case(
        "pool_b",
        "pool",
        "pool B: N=64 64x32x32, 3x3 s2",
        _CONV_C_INPUT,
        dict(pool=(3, 3), stride=2),
    ),
    Case(
        "pool_s",
        "pool",
        "pool S: N=1 30x24x24, 2x2 s2 (single-threaded kernels)",
        (1, 30, 24, 24),
        dict(pool=(2, 2), stride=2),
        default=False,
    ),
    Case(
        "bn_a", "bn", "batchnorm A: N=100, D=30*24*24", (100, 30 * 24 * 24), dict(per_channel=False)
    ),
    Case("bn_b", "bn", "batchnorm B: N=100, D=100", (100, 100), dict(per_channel=False)),
    Case(
        "bn_c",
        "bn",
        "batchnorm C: per channel, N=64 C=64 32x32",
        (64, 64, 32, 32),
        dict(per_channel=True),
    ),
)
CASE_NAMES = tuple(c.name for c in CASES)
DEFAULT_CASE_NAMES = tuple(c.name for c in CASES if c.default)


def get_cases(names=None):
    """The cases named in ``names`` (an iterable or comma-separated string), in table order;
    ``None``: the comparison's default set; ``"all"``: every case."""
    if names is None:
        return [c for c in CASES if c.default]
    if names == "all":
        return list(CASES)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASE_NAMES))
    if unknown:
        raise ValueError(
            f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASE_NAMES)}"
        )
    return [c for c in CASES if c.name in set(names)]


def cases_of_kind(kind, default_only=True):
    """``{short name: case}`` of one kind ("conv", "pool", "bn", ...), in table order."""
    return {c.short: c for c in CASES if c.kind == kind and (c.default or not default_only)}


def torch_available():
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def _conv_out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def case_data(case, dtype, seed=0):
    """Input, parameters and upstream gradient for ``case`` (all of ``dtype``), as a dict:
    ``x``; ``col`` (im2col/col2im); ``W``, ``b``, ``dout`` (conv); ``dout`` (pool);
    ``gamma``, ``beta``, ``dout`` (bn)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    x = normal(*case.shape)
    p = case.params
    d = {"x": x}
    if case.kind in ("im2col", "col2im"):
        fh, fw = p["filter"]
        oh = _conv_out(x.shape[2], fh, p["stride"], p["pad"])
        ow = _conv_out(x.shape[3], fw, p["stride"], p["pad"])
        d["col"] = normal(x.shape[0] * oh * ow, x.shape[1] * fh * fw)
    elif case.kind == "conv":
        fh, fw = p["filter"]
        n, c, h, w = x.shape
        fn = p["filters"]
        d["W"] = normal(fn, c, fh, fw, scale=(2.0 / (c * fh * fw)) ** 0.5)
        d["b"] = normal(fn, scale=0.1)
        d["dout"] = normal(
            n, fn, _conv_out(h, fh, p["stride"], p["pad"]), _conv_out(w, fw, p["stride"], p["pad"])
        )
    elif case.kind == "pool":
        ph, pw = p["pool"]
        n, c, h, w = x.shape
        d["dout"] = normal(n, c, _conv_out(h, ph, p["stride"], 0), _conv_out(w, pw, p["stride"], 0))
    elif case.kind == "bn":
        stats = x.shape[1] if (p["per_channel"] or x.ndim == 2) else int(np.prod(x.shape[1:]))
        d["gamma"] = (1.0 + normal(stats, scale=0.1)).astype(dtype)
        d["beta"] = normal(stats, scale=0.1)
        d["dout"] = normal(*x.shape)
    return d


# ------------------------------------------------------------------ NumPy contenders
def _numpy_contender(case, d, which):
    """Forward+backward callable on the reference (``which="reference"``) or fast layers."""
    import nnkernels
    import nnlayers as fast_layers
    from nnlayers import reference as R

    p = case.params
    x = d["x"]
    if case.kind == "im2col":
        fn = R.im2col if which == "reference" else nnkernels.im2col
        return lambda: fn(x, *p["filter"], p["stride"], p["pad"])
    if case.kind == "col2im":
        fn = R.col2im if which == "reference" else nnkernels.col2im
        col, shape = d["col"], x.shape
        return lambda: fn(col, shape, *p["filter"], p["stride"], p["pad"])
    mod = R if which == "reference" else fast_layers
    dout = d["dout"]
    if case.kind == "conv":
        layer = mod.Convolution(d["W"], d["b"], p["stride"], p["pad"])
    elif case.kind == "pool":
        layer = mod.Pooling(*p["pool"], stride=p["stride"], pad=0)
    elif case.kind == "bn":
        if p["per_channel"]:
            if which == "reference":
                return None
            layer = mod.BatchNormalization(d["gamma"], d["beta"], per_channel=True)
        else:
            layer = mod.BatchNormalization(d["gamma"], d["beta"])
    else:  # pragma: no cover
        raise ValueError(case.kind)

    def run():
        layer.forward(x)
        return layer.backward(dout)

    return run


# ------------------------------------------------------------------ PyTorch contender
def _torch_contender(case, d):
    import torch
    import torch.nn.functional as F

    p = case.params

    def leaf(a):
        return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)

    if case.kind == "im2col":
        xt = torch.from_numpy(d["x"])
        fh, fw = p["filter"]
        # torch's unfold gives the per-sample layout (N, C*FH*FW, L)
        return lambda: F.unfold(xt, (fh, fw), padding=p["pad"], stride=p["stride"])
    if case.kind == "col2im":
        n, c, h, w = d["x"].shape
        fh, fw = p["filter"]
        cols = torch.from_numpy(
            np.ascontiguousarray(d["col"].reshape(n, -1, c * fh * fw).transpose(0, 2, 1))
        )
        return lambda: F.fold(cols, (h, w), (fh, fw), padding=p["pad"], stride=p["stride"])

    xt = leaf(d["x"])
    dout = torch.from_numpy(d["dout"])
    if case.kind == "conv":
        wt, bt = leaf(d["W"]), leaf(d["b"])
        params = (xt, wt, bt)

        def forward():
            return F.conv2d(xt, wt, bt, stride=p["stride"], padding=p["pad"])
    elif case.kind == "pool":
        params = (xt,)

        def forward():
            return F.max_pool2d(xt, p["pool"], stride=p["stride"])
    elif case.kind == "bn":
        gt, bt = leaf(d["gamma"]), leaf(d["beta"])
        params = (xt, gt, bt)
        stats = d["gamma"].shape[0]
        running_mean = torch.zeros(stats, dtype=xt.dtype)
        running_var = torch.ones(stats, dtype=xt.dtype)

        def forward():
            return F.batch_norm(
                xt, running_mean, running_var, gt, bt, training=True, momentum=0.1, eps=1e-6
            )
    else:  # pragma: no cover
        raise ValueError(case.kind)

    def run():
        for t in params:
            t.grad = None
        forward().backward(dout)

    return run


def build_contenders(case, dtype, contenders=("reference", "nnlayers"), seed=0):
    """``{contender: callable or None}`` for ``case`` on data of ``dtype``.

    The BN case with ``(N, C*H*W)`` statistics is fed as a 2-D ``(N, D)`` array to every
    contender, so PyTorch's ``batch_norm`` normalises per feature like the reference.
    """
    d = case_data(case, dtype, seed)
    out = {}
    for name in contenders:
        if name == "torch":
            out[name] = _torch_contender(case, d)
        elif name in ("reference", "nnlayers"):
            out[name] = _numpy_contender(case, d, name)
        else:
            raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS}")
    return out


# ------------------------------------------------------------------ networks
#: the training-step benchmark's networks (``nntrain.networks``), by short name
NETWORKS = {"simple": "SimpleConvNet", "deep": "DeepConvNet"}
#: samples per training step, and the shape of one sample
BATCH = 100
IMAGE = (1, 28, 28)


def build_network(model, layers="nnlayers", dtype=np.float32, seed=0):
    """``nntrain``'s network ``model`` ("simple" or "deep") built from ``layers`` (a module,
    or "nnlayers" / "reference")."""
    from nntrain import networks

    if isinstance(layers, str):
        import nnlayers
        from nnlayers import reference

        layers = {"nnlayers": nnlayers, "reference": reference}[layers]
    return getattr(networks, NETWORKS[model])(
        layers=layers, dtype=dtype, rng=np.random.default_rng(seed)
    )


def network_batch(rng, dtype, batch=BATCH):
    """One training batch: images in [0, 1) of ``IMAGE`` shape and labels 0..9."""
    x = rng.random((batch,) + IMAGE).astype(dtype)
    t = rng.integers(0, 10, batch)
    return x, t


def torch_network(model):
    """The same architecture as ``build_network(model)`` in PyTorch (``torch.nn``)."""
    from torch import nn

    if model == "simple":
        return nn.Sequential(
            nn.Conv2d(1, 30, 5),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(30 * 12 * 12, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
    layers, channels = [], 1
    for i, (filters, pad) in enumerate([(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]):
        layers += [nn.Conv2d(channels, filters, 3, padding=pad), nn.ReLU()]
        channels = filters
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2, 2))
    layers += [
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 50),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(50, 10),
        nn.Dropout(0.5),
    ]
    return nn.Sequential(*layers)
