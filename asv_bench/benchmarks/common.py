"""Shape set, data and contenders shared by the benchmark modules.

Self-contained on purpose (it uses only the public APIs of nnkernels, nnlayers and
nnlayers.reference), so ``asv continuous`` can run these benchmarks against older commits.

Contenders: ``nnlayers`` (the fast layers), ``reference`` (pure NumPy) and ``torch``
(PyTorch CPU). Raising ``NotImplementedError`` in ``setup`` is asv's way to skip a
combination: used when PyTorch is not installed, and for per-channel batch norm, which
the reference does not have.
"""

import numpy as np

DTYPES = ["float32", "float64"]
IMPLS = ["nnlayers", "reference", "torch"]

# name: (input shape N,C,H,W; filters; filter size; stride; pad)
CONV = {
    "A": ((100, 1, 28, 28), 30, 5, 1, 0),
    "B": ((100, 16, 14, 14), 32, 3, 1, 1),
    "C": ((64, 64, 32, 32), 64, 3, 1, 1),
}
# name: (input shape, pool size, stride)
POOL = {
    "A": ((100, 30, 24, 24), 2, 2),
    "B": ((64, 64, 32, 32), 3, 2),
}
# name: (input shape, per_channel); A is per activation on (N, 30*24*24)
BN = {
    "A": ((100, 30 * 24 * 24), False),
    "B": ((100, 100), False),
    "C": ((64, 64, 32, 32), True),
}
# im2col/col2im run on conv C's input
COLUMNS = {"C": CONV["C"]}


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def skip(reason):
    """Skip this parameter combination (asv treats NotImplementedError in setup as a skip)."""
    raise NotImplementedError(reason)


def require_torch():
    """Import torch with as many intra-op threads as Numba uses, or skip."""
    try:
        import torch
    except ImportError:
        skip("PyTorch is not installed")
    import numba

    torch.set_num_threads(numba.get_num_threads())
    return torch


def conv_data(case, dtype, seed=0):
    shape, fn, k, stride, pad = CONV[case]
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    x = normal(rng, shape, dtype)
    W = normal(rng, (fn, c, k, k), dtype, scale=(2.0 / (c * k * k)) ** 0.5)
    b = normal(rng, (fn,), dtype, scale=0.1)
    dout = normal(rng, (n, fn, out_size(h, k, stride, pad), out_size(w, k, stride, pad)), dtype)
    return x, W, b, dout, stride, pad


def pool_data(case, dtype, seed=0):
    shape, k, stride = POOL[case]
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    x = normal(rng, shape, dtype)
    dout = normal(rng, (n, c, out_size(h, k, stride, 0), out_size(w, k, stride, 0)), dtype)
    return x, dout, k, stride


def bn_data(case, dtype, seed=0):
    shape, per_channel = BN[case]
    rng = np.random.default_rng(seed)
    x = normal(rng, shape, dtype)
    n_stats = shape[1]
    gamma = (1.0 + normal(rng, (n_stats,), dtype, scale=0.1)).astype(dtype)
    beta = normal(rng, (n_stats,), dtype, scale=0.1)
    dout = normal(rng, shape, dtype)
    return x, gamma, beta, dout, per_channel


def _layers_module(impl):
    if impl == "reference":
        from nnlayers import reference as module
    else:
        import nnlayers as module
    return module


def _torch_runner(forward, leaves, dout):
    def run():
        for t in leaves:
            t.grad = None
        forward().backward(dout)

    return run


def conv_runner(impl, case, dtype):
    """A callable doing one Convolution forward+backward with ``impl``."""
    x, W, b, dout, stride, pad = conv_data(case, dtype)
    if impl == "torch":
        torch = require_torch()
        import torch.nn.functional as F

        xt, Wt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, W, b))
        return _torch_runner(lambda: F.conv2d(xt, Wt, bt, stride=stride, padding=pad),
                             (xt, Wt, bt), torch.from_numpy(dout))
    layer = _layers_module(impl).Convolution(W, b, stride, pad)

    def run():
        layer.forward(x)
        layer.backward(dout)

    return run


def pool_runner(impl, case, dtype):
    """A callable doing one max-Pooling forward+backward with ``impl``."""
    x, dout, k, stride = pool_data(case, dtype)
    if impl == "torch":
        torch = require_torch()
        import torch.nn.functional as F

        xt = torch.from_numpy(x).requires_grad_(True)
        return _torch_runner(lambda: F.max_pool2d(xt, k, stride=stride), (xt,),
                             torch.from_numpy(dout))
    layer = _layers_module(impl).Pooling(k, k, stride=stride, pad=0)

    def run():
        layer.forward(x)
        layer.backward(dout)

    return run


def bn_runner(impl, case, dtype):
    """A callable doing one training-mode BatchNormalization forward+backward with ``impl``."""
    x, gamma, beta, dout, per_channel = bn_data(case, dtype)
    if impl == "torch":
        torch = require_torch()
        import torch.nn.functional as F

        xt, gt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, gamma, beta))
        rm = torch.zeros(gamma.shape[0], dtype=xt.dtype)
        rv = torch.ones(gamma.shape[0], dtype=xt.dtype)
        return _torch_runner(
            lambda: F.batch_norm(xt, rm, rv, gt, bt, training=True, momentum=0.1, eps=1e-6),
            (xt, gt, bt), torch.from_numpy(dout))
    if per_channel:
        if impl == "reference":
            skip("the reference has no per-channel batch norm")
        layer = _layers_module(impl).BatchNormalization(gamma, beta, per_channel=True)
    else:
        layer = _layers_module(impl).BatchNormalization(gamma, beta)

    def run():
        layer.forward(x, True)
        layer.backward(dout)

    return run


RUNNERS = {"conv": conv_runner, "pool": pool_runner, "bn": bn_runner}


def interleaved_medians(fns, rounds=5):
    """Median seconds of each callable in ``fns``, called in turn (A B A B ...)."""
    import time

    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [float(np.median(ts)) for ts in times]
