"""``nnkernels.precompile`` and ``python -m nnkernels.precompile`` warm the JIT cache."""

import pytest

from _subprocess_helpers import assert_ok, output_line, run_python

pytestmark = pytest.mark.slow

COUNT_MISSES = """
    import nnkernels
    from nnkernels import _jit, activations, batchnorm, columns, convolution, pooling

    nnkernels.precompile(processes=1)   # loads every kernel; compiles whatever is missing
    kernels = [v for m in (activations, batchnorm, columns, convolution)
               for v in vars(m).values() if isinstance(v, _jit._Kernel)]
    kernels += [pooling._forward_kernel(2, 2, 2), pooling._backward_kernel(2, 2)]
    kernels += [k.serial for k in kernels]  # the twins of split-path reductions stay unused
    print("MISSES", sum(sum(k.dispatcher._cache_misses.values()) for k in kernels))
    print("HITS", sum(sum(k.dispatcher._cache_hits.values()) for k in kernels))
"""


@pytest.mark.parametrize("warm_up", [
    "from nnkernels.precompile import main; main(['--processes', '2'])",
    "import nnkernels; print(nnkernels.precompile(processes=1))",
], ids=["cli-two-workers", "in-process"])
def test_precompile_leaves_nothing_to_compile(tmp_path, warm_up):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DISABLE_JIT": None}
    assert_ok(run_python(warm_up, env=env, timeout=600))
    result = run_python(COUNT_MISSES, env=env, timeout=600)
    assert_ok(result)
    assert output_line(result, "MISSES") == "0", result.stdout
    # for 2 dtypes, all loaded from the cache: 18 multi-threaded kernels and 14 twins (not
    # those of the split-path reductions, which only run on large input); where the fused
    # convolution kernels are available, also those 2, and not the per-sample column
    # kernels' 2 twins (the layers then do not use them)
    import nnkernels._blas

    expected = 2 * (20 + 12) if nnkernels._blas.AVAILABLE else 2 * (18 + 14)
    assert int(output_line(result, "HITS")) == expected


def test_processes_must_be_positive():
    import nnkernels

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="processes"):
            nnkernels.precompile(processes=bad)
