"""Start-up latency in a fresh interpreter: import + first Convolution forward+backward, and
import + first SimpleConvNet training step (batch 100 and an Adam update).

``timeraw_*`` runs the returned code in a new Python process per sample. Cold: the
sample's setup points ``NUMBA_CACHE_DIR`` at a new empty directory (removed when the
process exits), so the first call compiles. Warm: ``setup`` (in the asv process) fills a
cache directory once from a helper interpreter, and each sample loads from it.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from nnbench.scripts import FIRST_STEP, NUMBA_ONE_FUNCTION

from .common import DTYPES

# conv A of nnbench.cases, built and run in the timed interpreter
_FIRST_CONV = """
import nnlayers
from nnbench.cases import build_contenders, get_cases
build_contenders(get_cases("conv_a")[0], "{dtype}", ("nnlayers",))["nnlayers"]()
"""

_NUMBA_BASELINE = """
import sys
sys.path.insert(0, {folder!r})
import numba_baseline
"""

_COLD_SETUP = """
import atexit, os, shutil, tempfile
_cache = tempfile.mkdtemp(prefix="nnkernels_asv_cold_")
atexit.register(shutil.rmtree, _cache, True)
os.environ["NUMBA_CACHE_DIR"] = _cache
"""

_WARM_SETUP = """
import os
os.environ["NUMBA_CACHE_DIR"] = {cache!r}
"""


class ColdStart:
    """Empty Numba cache: the first calls include the compile."""

    params = [DTYPES]
    param_names = ["dtype"]
    timeout = 600
    repeat = (1, 3, 120.0)
    number = 1

    def timeraw_import_and_first_conv(self, dtype):
        return textwrap.dedent(_FIRST_CONV.format(dtype=dtype)), textwrap.dedent(_COLD_SETUP)

    def timeraw_import_and_first_training_step(self, dtype):
        return textwrap.dedent(FIRST_STEP.format(dtype=dtype)), textwrap.dedent(_COLD_SETUP)


class WarmStart:
    """Warm Numba cache: the first calls load compiled kernels."""

    params = [DTYPES]
    param_names = ["dtype"]
    timeout = 600
    repeat = (2, 5, 60.0)
    number = 1

    def setup(self, dtype):
        self.cache = tempfile.mkdtemp(prefix="nnkernels_asv_warm_")
        env = dict(os.environ, NUMBA_CACHE_DIR=self.cache)
        for code in (_FIRST_CONV, FIRST_STEP):
            subprocess.run(
                [sys.executable, "-c", textwrap.dedent(code.format(dtype=dtype))],
                env=env,
                check=True,
            )
        with open(os.path.join(self.cache, "numba_baseline.py"), "w") as module:
            module.write(textwrap.dedent(NUMBA_ONE_FUNCTION))
        baseline = textwrap.dedent(_NUMBA_BASELINE.format(folder=self.cache))
        subprocess.run([sys.executable, "-c", baseline], env=env, check=True)

    def teardown(self, dtype):
        shutil.rmtree(self.cache, ignore_errors=True)

    def timeraw_import_and_first_conv(self, dtype):
        return (
            textwrap.dedent(_FIRST_CONV.format(dtype=dtype)),
            textwrap.dedent(_WARM_SETUP.format(cache=self.cache)),
        )

    def timeraw_import_and_first_training_step(self, dtype):
        return (
            textwrap.dedent(FIRST_STEP.format(dtype=dtype)),
            textwrap.dedent(_WARM_SETUP.format(cache=self.cache)),
        )

    def timeraw_numba_own_start(self, dtype):
        """The floor: import Numba and call one trivial cached function (the warm start
        target is measured above it)."""
        return (
            textwrap.dedent(_NUMBA_BASELINE.format(folder=self.cache)),
            textwrap.dedent(_WARM_SETUP.format(cache=self.cache)),
        )


def timeraw_import_nnlayers():
    """``import nnlayers`` alone (kernels compile lazily, so the cache does not matter)."""
    return "import nnlayers"
