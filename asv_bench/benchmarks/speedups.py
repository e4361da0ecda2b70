"""Speedup ratios (unit "x") measured in one process with the contenders interleaved.

``track_speedup_vs_reference`` = reference time / nnlayers time; ``track_speedup_vs_torch``
= PyTorch time / nnlayers time. Higher is better for both. Each is the ratio of medians
over a few interleaved rounds (A B A B ...), which is steadier than comparing two
separately timed benchmarks on a shared machine.
"""

from .common import (
    BN,
    CONV,
    DTYPES,
    POOL,
    interleaved_medians,
    require_torch,
    runner,
    skip,
)

CASES = [f"conv {c}" for c in CONV] + [f"pool {c}" for c in POOL] + [f"bn {c}" for c in BN]
ROUNDS = 5


class _Speedup:
    params = [CASES, DTYPES]
    param_names = ["case", "dtype"]
    timeout = 300
    baseline = None

    def setup(self, case, dtype):
        kind, shape = case.split()
        if self.baseline == "torch":
            require_torch()
        if self.baseline == "reference" and kind == "bn" and BN[shape].params["per_channel"]:
            skip("the reference has no per-channel batch norm")
        self.fast = runner(kind, "nnlayers", shape, dtype)
        self.base = runner(kind, self.baseline, shape, dtype)
        self.fast()
        self.base()

    def _ratio(self):
        fast, base = interleaved_medians([self.fast, self.base], ROUNDS)
        return base / fast


class SpeedupVsReference(_Speedup):
    baseline = "reference"

    def track_speedup_vs_reference(self, case, dtype):
        return self._ratio()

    track_speedup_vs_reference.unit = "x"


class SpeedupVsTorch(_Speedup):
    baseline = "torch"

    def track_speedup_vs_torch(self, case, dtype):
        return self._ratio()

    track_speedup_vs_torch.unit = "x"
