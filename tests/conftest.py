"""Fixtures and the Hypothesis profile of the correctness suite (helpers: strategies.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import nnkernels
import nnlayers
from conv_routes import ROUTES, convolution_route

# Small test inputs would otherwise run the kernels' single-threaded twins; run the
# multi-threaded kernels (where races could hide) instead. tests/nnkernels/test_serial_twins.py
# checks that the twins give bit-identical results.
nnkernels.set_config(parallel_threshold=0)

settings.register_profile(
    "nnlayers",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("nnlayers")


@pytest.fixture
def workspace_limit():
    """Yield ``set_workspace_limit``; the previous limit is restored afterwards."""
    previous = nnlayers.get_workspace_limit()
    try:
        yield nnlayers.set_workspace_limit
    finally:
        nnlayers.set_workspace_limit(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def forbid_kernels(monkeypatch):
    """Call it to make every JIT kernel raise if launched (proves checks run before kernels)."""
    import nnkernels.runtime.jit as jit

    def activate():
        def sentinel(self, *args):
            raise AssertionError(f"kernel {self.__name__} ran on invalid input")

        monkeypatch.setattr(jit._Kernel, "__call__", sentinel)

    return activate


@pytest.fixture
def without_library_blas(monkeypatch):
    """Call it to make this process behave as if the library's BLAS were not installed."""
    from nnkernels.runtime.process import STATE, BlasState

    def activate():
        missing = BlasState()
        missing.looked, missing.reason = True, "scipy-openblas32 is not installed (a test)"
        monkeypatch.setattr(STATE, "blas", missing)

    return activate


@pytest.fixture(params=ROUTES)
def conv_route(request):
    """Run the test once per route a Convolution layer can take (``conv_routes.py``)."""
    with convolution_route(request.param):
        yield request.param


def pytest_collection_modifyitems(items):
    """Everything under tests/hardening/ is slow: the README's fast suite leaves it to CI."""
    for item in items:
        if "hardening" in item.path.parts:
            item.add_marker(pytest.mark.slow)
