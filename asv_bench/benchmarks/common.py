"""Shapes, data and contenders of the asv suite: all from :mod:`nnbench.cases`, the one
case table the comparison command and the step benchmark use too.

Contenders: ``nnlayers`` (the fast layers), ``reference`` (pure NumPy) and ``torch``
(PyTorch CPU). Raising ``NotImplementedError`` in ``setup`` is asv's way to skip a
combination: used when PyTorch is not installed, and for per-channel batch norm, which
the reference does not have.

The suite imports ``nnbench`` from the installed package (``asv run --python=same``), so
``asv continuous`` reaches back only to commits that ship ``nnbench``.
"""

from nnbench import timing
from nnbench.cases import DTYPES as _DTYPES
from nnbench.cases import build_contenders, case_data, cases_of_kind, get_cases

DTYPES = list(_DTYPES)
IMPLS = ["nnlayers", "reference", "torch"]

# short name ("A", "B", "C") -> nnbench case; asv's parameter values stay the letters
CONV = cases_of_kind("conv")
POOL = cases_of_kind("pool", default_only=False)  # S: one image, the serial twins
BN = cases_of_kind("bn")
# im2col/col2im run on conv C's input
COLUMNS = {"C": get_cases("im2col")[0]}


def skip(reason):
    """Skip this parameter combination (asv treats NotImplementedError in setup as a skip)."""
    raise NotImplementedError(reason)


def require_torch():
    """Import torch with as many intra-op threads as Numba uses, or skip."""
    try:
        import torch
    except ImportError:
        skip("PyTorch is not installed")
    import nnkernels

    torch.set_num_threads(nnkernels.get_num_threads())
    return torch


def data(table, case, dtype, seed=0):
    """``(case, data dict)`` of ``table[case]`` in ``dtype`` (see ``nnbench.cases.case_data``)."""
    spec = table[case]
    return spec, case_data(spec, dtype, seed)


def runner(kind, impl, case, dtype):
    """A callable doing one forward+backward of layer ``kind`` with ``impl``, or a skip."""
    spec = {"conv": CONV, "pool": POOL, "bn": BN}[kind][case]
    if impl == "torch":
        require_torch()
    run = build_contenders(spec, dtype, (impl,))[impl]
    if run is None:
        skip(f"{impl} has no {spec.label}")
    return run


def interleaved_medians(fns, rounds=5):
    """Median seconds of each callable in ``fns``, called in turn (A B A B ...)."""
    timed = timing.time_interleaved(dict(enumerate(fns)), rounds, warmup=1)
    return [timed[i][0] for i in range(len(fns))]
