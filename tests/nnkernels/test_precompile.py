"""``nnkernels.precompile`` and ``python -m nnkernels.precompile`` warm the JIT cache."""

import os
import signal
import subprocess
import sys
import time

import pytest

from _subprocess_helpers import assert_ok, child_env, output_line, run_python

pytestmark = pytest.mark.slow

COUNT_MISSES = """
    import nnkernels
    from nnkernels.runtime import jit as _jit

    nnkernels.precompile(processes=1)   # loads every kernel; compiles whatever is missing
    kernels = _jit.all_kernels()
    print("MISSES", sum(sum(k.dispatcher._cache_misses.values()) for k in kernels))
    print("HITS", sum(sum(k.dispatcher._cache_hits.values()) for k in kernels))
    print("COMPILED", sum(len(k.dispatcher.signatures) for k in kernels))
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
    # every kernel of the table for 2 dtypes (18, and 21 where the library's BLAS is: the
    # fused convolution and products kernels), one compiled version each, all loaded from
    # the cache
    import nnkernels

    compiled = 2 * (21 if nnkernels.conv_kernels_available() else 18)
    assert int(output_line(result, "HITS")) == int(output_line(result, "COMPILED")) == compiled


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


def _group_gone(pgid, within):
    """Whether no process of the group ``pgid`` is left within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups: POSIX")
@pytest.mark.parametrize("presses", [1, 2], ids=["once", "twice"])
@pytest.mark.parametrize("after", [0.5, 2.5, 6.0], ids=["starting", "spawning", "compiling"])
def test_ctrl_c_ends_the_command_and_every_worker(tmp_path, after, presses):
    """Ctrl-C (SIGINT to the terminal's process group) once, or twice 0.5 s apart, at
    several moments of a cold compile: the command exits 130 and every process of its group
    is gone within seconds. Twice used to leave it and its workers waiting on each other."""
    env = child_env({"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DISABLE_JIT": None})
    command = [sys.executable, "-m", "nnkernels.precompile", "--processes", "2"]
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(after)
        for press in range(presses):
            if press:
                time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _group_gone(proc.pid, within=10), "a worker outlived the command"
    assert proc.returncode in (130, -signal.SIGINT), stderr.decode()[-2000:]
    if proc.returncode == 130:
        assert b"interrupted" in stderr and b"Traceback" not in stderr, stderr.decode()


def test_a_run_after_an_interrupted_one_completes(tmp_path):
    env = child_env({"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DISABLE_JIT": None})
    command = [sys.executable, "-m", "nnkernels.precompile", "--processes", "2"]
    proc = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE)
    time.sleep(8)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert _group_gone(proc.pid, within=10)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "every kernel ready" in done.stdout
