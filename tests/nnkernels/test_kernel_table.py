"""Every example call of the kernel table gives bit-identical results run in one share or
in many shares over threads; and the table reaches every kernel."""

import numpy as np
import pytest

import nnkernels
import nnkernels.runtime.jit as jit
from _subprocess_helpers import assert_ok, output_line, run_python
from nnkernels import registry as _registry

SERIAL = 1 << 62  # a parallel_threshold no work reaches


def _flat(results):
    for result in results:
        for array in result if isinstance(result, tuple) else (result,):
            if array is not None:  # batchnorm_forward(return_xn=False)'s xn
                yield array


def _run_everything(dtype, threshold):
    with nnkernels.config_context(parallel_threshold=threshold):
        return {name: list(_flat(run())) for name, run in _registry.example_calls(dtype)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_serial_and_parallel_kernels_agree_bitwise(dtype):
    parallel = _run_everything(dtype, 0)
    serial = _run_everything(dtype, SERIAL)
    assert parallel.keys() == serial.keys() == _registry.table().keys()
    for name in parallel:
        assert len(parallel[name]) == len(serial[name]) > 0, name
        for p, s in zip(parallel[name], serial[name]):
            assert p.dtype == s.dtype and p.shape == s.shape, name
            np.testing.assert_array_equal(p, s, err_msg=name)


REACHED = """
    import numpy as np
    import nnkernels
    from nnkernels import registry as _registry
    from nnkernels.runtime import jit as _jit
    for dtype in (np.float32, np.float64):
        for threshold in (0, 1 << 62):
            with nnkernels.config_context(parallel_threshold=threshold):
                for _, run in _registry.example_calls(dtype):
                    run()
    kernels = _jit.all_kernels()
    missed = [k.__name__ for k in kernels if not k.dispatcher.signatures]
    if not nnkernels.conv_kernels_available():
        missed = [name for name in missed if not name.startswith("_conv_")]
    print("KERNELS", len(kernels))
    print("MISSED", sorted(missed))
"""


def test_every_kernel_is_reached_by_the_table():
    """In a fresh process, after every example ran both ways, every kernel compiled: a
    kernel no registered example reaches fails here."""
    result = run_python(REACHED, env={"NUMBA_DISABLE_JIT": None}, timeout=600)
    assert_ok(result)
    assert int(output_line(result, "KERNELS")) >= 18
    assert output_line(result, "MISSED") == "[]"


def test_every_public_kernel_function_is_registered():
    public = {
        name
        for name in nnkernels.__all__
        if name
        not in (
            "conv_output_shape",
            "Geometry",
            "compute_dtype",
            "real_array",
            "CONV_ROUTES",
            "ConvolutionEngine",  # runs the kernels of registered functions only
            "kernel_groups",
            "conv_kernels_available",
            "set_num_threads",
            "get_num_threads",
            "threading_layer",
            "precompile",
            "get_config",
            "set_config",
            "config_context",
            "show_config",
            "runtime_info",
        )
    }
    assert public == set(_registry.table())


def test_small_work_runs_in_one_share():
    with nnkernels.config_context(parallel_threshold=100):
        assert jit.one_share(99) and not jit.one_share(100)
        with jit.forced_parallel():
            assert not jit.one_share(1)
