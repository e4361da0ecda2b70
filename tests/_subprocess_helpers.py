"""Run Python snippets in fresh interpreters for the hardening tests.

Threading layers, fork behaviour, JIT-cache faults and ``NUMBA_DISABLE_JIT`` are
process-wide, so those tests start a subprocess per case and assert on its exit status and
output. Every helper here takes a timeout: a deadlock becomes a test failure, not a hung CI.
"""

import ctypes
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGES = ("nnkernels", "nnlayers")


def child_env(overrides=None):
    """``os.environ`` plus ``overrides``; a value of ``None`` removes the variable."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run_python(code, env=None, timeout=180, cwd=None, preexec_fn=None, args=(), executable=None):
    """Run ``code`` (dedented) in a fresh interpreter (``executable``, default this one);
    return the ``CompletedProcess``.

    A timeout raises ``subprocess.TimeoutExpired`` after killing the child: callers turn
    it into a "deadlock" failure.
    """
    return subprocess.run(
        [executable or sys.executable, "-c", textwrap.dedent(code), *args],
        env=child_env(env),
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
        preexec_fn=preexec_fn,
    )


def start_python(code, env=None, cwd=None):
    """Start ``code`` without waiting (for concurrent runs); returns the ``Popen``."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def describe(result):
    """Exit status and the tail of both streams, for assertion messages."""
    return (
        f"returncode={result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}"
        f"\n--- stderr ---\n{result.stderr[-4000:]}"
    )


def assert_ok(result, expect=None):
    """The child exited 0 (and printed ``expect`` when given)."""
    assert result.returncode == 0, describe(result)
    if expect is not None:
        assert expect in result.stdout, describe(result)


def output_line(result, key):
    """The rest of the child's stdout line that starts with ``key`` and a space."""
    for line in result.stdout.splitlines():
        if line.startswith(key + " "):
            return line[len(key) + 1 :]
    raise AssertionError(f"no {key} line\n" + describe(result))


def pip_tbb_available():
    """True when Intel TBB is installed from pip in this environment (``pip install tbb``):
    Numba's ``tbb`` threading layer is then available to the user's code."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        if glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*")):
            return True
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def copy_packages(dest):
    """Copy ``src/nnkernels`` and ``src/nnlayers`` (no caches) under ``dest/src``; return it.

    Used with ``PYTHONPATH`` so a test can edit or touch kernel sources, and so Numba's
    fallback cache locations (the package's ``__pycache__``) land in a temporary directory
    rather than the working tree.
    """
    root = Path(dest) / "src"
    for name in PACKAGES:
        shutil.copytree(
            SRC / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
        )
    return root


def drop_permission_override():
    """``preexec_fn``: the child keeps uid 0 but loses CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH.

    Tests run as root, which ignores permission bits; without these capabilities a
    ``chmod 0o555`` directory really is read-only for the child.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def can_drop_permission_override():
    """Whether :func:`drop_permission_override` works here (needs root with CAP_SETPCAP)."""
    if os.geteuid() != 0:
        return False
    try:
        result = subprocess.run(
            [sys.executable, "-c", "pass"],
            preexec_fn=drop_permission_override,
            timeout=60,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0
