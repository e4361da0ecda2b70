"""Per-kernel timings of nnkernels: im2col/col2im (both layouts), the fused convolution
kernels, products on the library's BLAS, max pooling, batch norm.

Each ``setup`` calls every kernel once with the exact shapes and dtype it will time, so
the JIT compile (or the cache load) happens there and never in the timed function.
"""

from .common import BN, COLUMNS, CONV, DTYPES, POOL, data, skip


def _kernel(name):
    import nnkernels

    fn = getattr(nnkernels, name, None)
    if fn is None:
        skip(f"nnkernels.{name} does not exist in this version")
    return fn


class Columns:
    """im2col/col2im in the book's layout, on conv C's input (N=64, 64x32x32, 3x3 pad 1)."""

    params = [list(COLUMNS), DTYPES]
    param_names = ["shape", "dtype"]
    unfold, fold = "im2col", "col2im"

    def setup(self, case, dtype):
        spec, d = data(COLUMNS, case, dtype)
        self.args = (*spec.params["filter"], spec.params["stride"], spec.params["pad"])
        self.x = d["x"]
        self.im2col = _kernel(self.unfold)
        self.col2im = _kernel(self.fold)
        self.col = self.im2col(self.x, *self.args)
        self.col2im(self.col, self.x.shape, *self.args)

    def time_im2col(self, case, dtype):
        self.im2col(self.x, *self.args)

    def time_col2im(self, case, dtype):
        self.col2im(self.col, self.x.shape, *self.args)


class ColumnsPerSample(Columns):
    """The per-sample layout ``(N, C*FH*FW, OH*OW)`` the Convolution layer uses."""

    unfold, fold = "im2col_per_sample", "col2im_per_sample"


class Convolution:
    """conv_forward / conv_backward: columns, BLAS products and folding in one kernel each
    (skipped where the library's BLAS is not available)."""

    params = [list(CONV), DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, case, dtype):
        import nnkernels

        if not getattr(nnkernels, "conv_kernels_available", lambda: False)():
            skip("the fused convolution kernels are unavailable here")
        spec, d = data(CONV, case, dtype)
        self.x, self.W, self.b, self.dout = d["x"], d["W"], d["b"], d["dout"]
        self.stride, self.pad = spec.params["stride"], spec.params["pad"]
        self.forward, self.backward = nnkernels.conv_forward, nnkernels.conv_backward
        self.forward(self.x, self.W, self.b, self.stride, self.pad)
        self.backward(self.dout, self.x, self.W, self.stride, self.pad)

    def time_forward(self, case, dtype):
        self.forward(self.x, self.W, self.b, self.stride, self.pad)

    def time_backward(self, case, dtype):
        self.backward(self.dout, self.x, self.W, self.stride, self.pad)


class MaxPool:
    """maxpool_forward / maxpool_backward kernels."""

    params = [list(POOL), DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, case, dtype):
        spec, d = data(POOL, case, dtype)
        self.x, self.dout = d["x"], d["dout"]
        self.k, self.stride = spec.params["pool"][0], spec.params["stride"]
        self.forward = _kernel("maxpool_forward")
        self.backward = _kernel("maxpool_backward")
        _, self.argmax = self.forward(self.x, self.k, self.k, self.stride, 0)
        self.backward(self.dout, self.argmax, self.x.shape, self.k, self.k, self.stride, 0)

    def time_forward(self, case, dtype):
        self.forward(self.x, self.k, self.k, self.stride, 0)

    def time_backward(self, case, dtype):
        self.backward(self.dout, self.argmax, self.x.shape, self.k, self.k, self.stride, 0)


class BatchNorm:
    """batchnorm_forward / batchnorm_backward kernels: per feature (A, B), per channel (C)."""

    params = [list(BN), DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, case, dtype):
        _, d = data(BN, case, dtype)
        self.x, self.gamma, self.beta, self.dout = d["x"], d["gamma"], d["beta"], d["dout"]
        self.forward = _kernel("batchnorm_forward")
        self.backward = _kernel("batchnorm_backward")
        try:
            _, self.xn, _, _, self.std = self.forward(self.x, self.gamma, self.beta, 1e-6)
        except NotImplementedError:
            skip("batch-norm kernels not implemented in this version")
        self.backward(self.dout, self.xn, self.std, self.gamma)

    def time_forward(self, case, dtype):
        self.forward(self.x, self.gamma, self.beta, 1e-6)

    def time_backward(self, case, dtype):
        self.backward(self.dout, self.xn, self.std, self.gamma)


class BatchNormWithoutXn:
    """The layer's pair: batchnorm_forward without writing xn, and
    batchnorm_backward_from_input recomputing it from x (float64 statistics)."""

    params = [list(BN), DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, case, dtype):
        _, d = data(BN, case, dtype)
        self.x, self.gamma, self.beta, self.dout = d["x"], d["gamma"], d["beta"], d["dout"]
        self.forward = _kernel("batchnorm_forward")
        self.backward = _kernel("batchnorm_backward_from_input")
        _, _, self.mean, _, self.std = self.forward(
            self.x, self.gamma, self.beta, 1e-6, return_xn=False, stats_dtype="float64"
        )
        self.backward(self.dout, self.x, self.mean, self.std, self.gamma)

    def time_forward(self, case, dtype):
        self.forward(self.x, self.gamma, self.beta, 1e-6, return_xn=False, stats_dtype="float64")

    def time_backward(self, case, dtype):
        self.backward(self.dout, self.x, self.mean, self.std, self.gamma)


class Products:
    """``nnkernels.matmul`` on the book's ``Affine`` products, batch 100: SimpleConvNet's
    4320 -> 100 and DeepConvNet's 1024 -> 50; forward, then both gradients."""

    params = [["simple", "deep"], DTYPES]
    param_names = ["network", "dtype"]
    shapes = {"simple": (4320, 100), "deep": (1024, 50)}

    def setup(self, network, dtype):
        import numpy as np

        self.matmul = _kernel("matmul")
        inputs, outputs = self.shapes[network]
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((100, inputs)).astype(dtype)
        self.W = rng.standard_normal((inputs, outputs)).astype(dtype)
        self.dout = rng.standard_normal((100, outputs)).astype(dtype)
        self.time_forward(network, dtype)
        self.time_backward(network, dtype)

    def time_forward(self, network, dtype):
        self.matmul(self.x, self.W)

    def time_backward(self, network, dtype):
        self.matmul(self.dout, self.W.T)
        self.matmul(self.x.T, self.dout)
