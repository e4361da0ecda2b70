"""Every script in ``tools/`` runs in its ``--quick`` mode (a smoke test, not a
measurement) and reaches the library through public names only."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from _subprocess_helpers import child_env, describe

TOOLS = sorted((Path(__file__).resolve().parents[2] / "tools").glob("*.py"))
# a private name of the project's packages: nnkernels.runtime.jit, nnlayers.layers._CONV_ROUTE, ...
_PRIVATE = re.compile(r"\b(?:nnkernels|nnlayers|nntrain|nnbench)(?:\.\w+)*\._\w")


def test_the_tools_are_there():
    assert len(TOOLS) >= 5


@pytest.mark.parametrize(
    "tool",
    [pytest.param(t, marks=pytest.mark.slow) if t.stem == "sweep_throughput" else t for t in TOOLS],
    ids=lambda p: p.stem,
)
def test_tool_quick_mode_runs(tool):
    done = subprocess.run(
        [sys.executable, str(tool), "--quick"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, describe(done)
    assert done.stdout.strip(), describe(done)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.stem)
def test_tool_documents_its_command_and_uses_public_names_only(tool):
    source = tool.read_text()
    assert f"python tools/{tool.name}" in source and "--quick" in source
    assert not _PRIVATE.findall(source), _PRIVATE.findall(source)
    assert "from _" not in source and "import _" not in source  # no private helper modules
