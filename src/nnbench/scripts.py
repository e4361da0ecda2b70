"""Sources that start-up benchmarks run in fresh interpreters (the asv suite's
``startup`` benchmarks and ``tools/warm_start.py``), written once here.

Each is a string of Python code; ``FIRST_STEP`` takes ``.format(dtype=...)``.
"""

__all__ = ["FIRST_STEP", "NUMBA_ONE_FUNCTION"]

#: SimpleConvNet's first training step on a batch of 100 with an Adam update (what a
#: training script waits for)
FIRST_STEP = """
import numpy as np
import nnlayers
from nnbench.cases import build_network, network_batch
from nntrain.optimizers import Adam
net = build_network("simple", "nnlayers", np.{dtype})
x, t = network_batch(np.random.default_rng(0), np.{dtype})
Adam().update(net.params, net.gradient(x, t))
"""

#: Numba's own start, the floor of every warm start: a module that imports Numba and calls
#: one trivial cached function (run as a script, or imported as a module)
NUMBA_ONE_FUNCTION = """
import numba


@numba.njit(cache=True)
def one(x):
    return x + 1


one(1)
"""
