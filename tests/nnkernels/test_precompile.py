"""``nnkernels.precompile`` and ``python -m nnkernels.precompile`` warm the JIT cache."""

import pytest

from _subprocess_helpers import assert_ok, output_line, run_python

pytestmark = pytest.mark.slow

COUNT_MISSES = """
    import nnkernels
    from nnkernels.runtime import jit as _jit

    nnkernels.precompile(processes=1)   # loads every kernel; compiles whatever is missing
    kernels = _jit.all_kernels()
    kernels += [k.serial for k in kernels if k._serial not in (None, k)]
    print("MISSES", sum(sum(k.dispatcher._cache_misses.values()) for k in kernels))
    print("HITS", sum(sum(k.dispatcher._cache_hits.values()) for k in kernels))
    print("COMPILED", sum(len(k.dispatcher.signatures) for k in kernels))
    print("PARALLEL", sum(len(k.dispatcher.signatures) for k in _jit.all_kernels()))
"""


@pytest.mark.parametrize(
    "warm_up",
    [
        "from nnkernels.precompile import main; main(['--processes', '2'])",
        "import nnkernels; print(nnkernels.precompile(processes=1))",
    ],
    ids=["cli-two-workers", "in-process"],
)
def test_precompile_leaves_nothing_to_compile(tmp_path, warm_up):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DISABLE_JIT": None}
    assert_ok(run_python(warm_up, env=env, timeout=600))
    result = run_python(COUNT_MISSES, env=env, timeout=600)
    assert_ok(result)
    assert output_line(result, "MISSES") == "0", result.stdout
    # every kernel of the table for 2 dtypes (18 multi-threaded ones, 20 where the fused
    # convolution kernels are available), with the twins in use at the default settings,
    # all loaded from the cache
    import nnkernels

    parallel = 2 * (20 if nnkernels.conv_kernels_available() else 18)
    assert int(output_line(result, "PARALLEL")) == parallel
    assert int(output_line(result, "HITS")) == int(output_line(result, "COMPILED")) > parallel


def test_processes_must_be_positive():
    import nnkernels

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="processes"):
            nnkernels.precompile(processes=bad)


def test_unknown_kernel_groups_are_named():
    from nnkernels._precompile import precompile

    with pytest.raises(ValueError, match=r"unknown kernel group\(s\) \['relus'\]"):
        precompile(["float32"], processes=1, groups=["relu", "relus"])
    assert set(precompile(["float32"], processes=1, groups=["relu"])) == {"float32"}
