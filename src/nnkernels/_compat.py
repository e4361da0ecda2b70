"""The Numba versions this package is tested with, checked once at ``import nnkernels``.

The kernels' on-disk cache (``_jit._TolerantCache``) subclasses Numba's ``FunctionCache``
and reaches into its internals, which change between Numba releases without notice, so
only the releases CI has run are admitted: ``pyproject.toml`` says the same range
(``tests/nnkernels/test_compat.py`` keeps the two in step). NumPy needs no check of its own: every
Numba refuses to import with a NumPy it does not support.

Trying a newer Numba (to raise the bound): set ``NNKERNELS_ALLOW_UNTESTED_NUMBA=1`` and the
error becomes a warning.
"""

import os
import re
import warnings

import numba

__all__ = ["NUMBA_TESTED", "ALLOW_UNTESTED_NUMBA", "numba_version_problem", "check_numba_version"]

#: the oldest and newest Numba ``(major, minor)`` tested; every patch release of both counts
NUMBA_TESTED = ((0, 60), (0, 68))
#: environment variable that turns the error for an untested Numba into a warning
ALLOW_UNTESTED_NUMBA = "NNKERNELS_ALLOW_UNTESTED_NUMBA"


def _release(version):
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def numba_version_problem(version):
    """``None`` when Numba ``version`` (a ``numba.__version__`` string) is tested, else why
    it is not and what to do."""
    (lo_major, lo_minor), (hi_major, hi_minor) = NUMBA_TESTED
    release = _release(version)
    if release is not None and NUMBA_TESTED[0] <= release <= NUMBA_TESTED[1]:
        return None
    return (
        f"nnkernels is tested with Numba {lo_major}.{lo_minor} to {hi_major}.{hi_minor}.x "
        f"but found Numba {version}; its kernel cache builds on Numba internals that "
        f"change between releases. Install a tested version: "
        f"pip install 'numba>={lo_major}.{lo_minor},<{hi_major}.{hi_minor + 1}'"
    )


def check_numba_version(version=None):
    """Raise ImportError for an untested Numba (a RuntimeWarning instead when
    ``NNKERNELS_ALLOW_UNTESTED_NUMBA=1``). Reads ``numba.__version__`` only."""
    problem = numba_version_problem(numba.__version__ if version is None else version)
    if problem is None:
        return
    if os.environ.get(ALLOW_UNTESTED_NUMBA) == "1":
        warnings.warn(
            f"{problem} (trying it anyway: {ALLOW_UNTESTED_NUMBA}=1)", RuntimeWarning, stacklevel=2
        )
    else:
        raise ImportError(
            f"{problem}; or set {ALLOW_UNTESTED_NUMBA}=1 to try this one anyway, with a warning"
        )


check_numba_version()
