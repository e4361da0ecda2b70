"""The tested Numba range: refused outside it at import, and the same as pyproject.toml's."""

import re

import numba
import pytest

from _subprocess_helpers import REPO, describe, run_python
from nnkernels import _compat

IMPORT_AS = """
import numba
numba.__version__ = {version!r}
import nnkernels
print("imported")
"""


@pytest.mark.parametrize(
    "version", ["0.60.0", "0.64.2", "0.68.1", "0.68.0rc1", "0.62.0+3.g1234abc", numba.__version__]
)
def test_tested_versions_pass(version):
    assert _compat.numba_version_problem(version) is None


@pytest.mark.parametrize("version", ["0.59.1", "0.69.0", "0.69.0rc1", "1.0.0", "0.7", "dev"])
def test_untested_versions_are_named_with_the_range_and_the_fix(version):
    problem = _compat.numba_version_problem(version)
    assert f"found Numba {version}" in problem
    assert "Numba 0.60 to 0.68.x" in problem
    assert "pip install 'numba>=0.60,<0.69'" in problem


@pytest.mark.parametrize("version", ["0.69.0", "0.59.1"])
def test_import_refuses_an_untested_numba(version):
    result = run_python(IMPORT_AS.format(version=version), env={_compat.ALLOW_UNTESTED_NUMBA: None})
    assert result.returncode != 0, describe(result)
    assert "ImportError: nnkernels is tested with Numba 0.60 to 0.68.x" in result.stderr
    assert f"found Numba {version}" in result.stderr
    assert f"{_compat.ALLOW_UNTESTED_NUMBA}=1" in result.stderr
    assert "imported" not in result.stdout


def test_import_warns_instead_when_allowed():
    result = run_python(IMPORT_AS.format(version="0.69.0"), env={_compat.ALLOW_UNTESTED_NUMBA: "1"})
    assert result.returncode == 0, describe(result)
    assert "imported" in result.stdout
    assert "RuntimeWarning: nnkernels is tested with Numba 0.60 to 0.68.x" in result.stderr


def test_pyproject_admits_the_tested_range():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(REPO / "pyproject.toml", "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    (lo_major, lo_minor), (hi_major, hi_minor) = _compat.NUMBA_TESTED
    spec = next(d for d in dependencies if re.match(r"numba\b", d))
    assert spec.replace(" ", "") == f"numba>={lo_major}.{lo_minor},<{hi_major}.{hi_minor + 1}"
