"""Fixtures and the Hypothesis profile of the correctness suite (helpers: strategies.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import nnlayers

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
    import nnkernels._jit as jit
    import nnkernels.batchnorm
    import nnkernels.columns
    import nnkernels.pooling

    def activate():
        patched = 0
        for module in (nnkernels.columns, nnkernels.pooling, nnkernels.batchnorm):
            for name, value in list(vars(module).items()):
                if isinstance(value, (jit._Kernel,)) or type(value).__name__ == "CPUDispatcher":
                    def sentinel(*args, _name=name):
                        raise AssertionError(f"kernel {_name} ran on invalid input")
                    monkeypatch.setattr(module, name, sentinel)
                    patched += 1
        assert patched >= 4, "expected to find the JIT kernels to forbid"

    return activate
