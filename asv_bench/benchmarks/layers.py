"""Layer forward+backward: nnlayers vs the NumPy reference vs PyTorch CPU.

``setup`` builds the layer on the exact shapes and dtype and runs it once, so compile
time never lands in ``time_*``. The ``torch`` contender is skipped when PyTorch is not
installed; the ``reference`` contender is skipped for per-channel batch norm (case C).
``peakmem_*`` is the process's peak resident memory during one forward+backward.
"""

from .common import BN, CONV, DTYPES, IMPLS, POOL, runner


class _Layer:
    param_names = ["shape", "dtype", "impl"]
    kind = None
    timeout = 300
    # at most 10 samples and 20 s per benchmark: the reference on conv C takes ~1 s a call
    repeat = (2, 10, 20.0)

    def setup(self, case, dtype, impl):
        self.run = runner(self.kind, impl, case, dtype)
        self.run()

    def time_forward_backward(self, case, dtype, impl):
        self.run()


class Convolution(_Layer):
    params = [list(CONV), DTYPES, IMPLS]
    kind = "conv"

    def peakmem_forward_backward(self, case, dtype, impl):
        self.run()


class Pooling(_Layer):
    params = [list(POOL), DTYPES, IMPLS]
    kind = "pool"

    def peakmem_forward_backward(self, case, dtype, impl):
        self.run()


class BatchNormalization(_Layer):
    params = [list(BN), DTYPES, IMPLS]
    kind = "bn"
