"""Convolution forward+backward with its columns kept whole vs processed in chunks.

``python tools/conv_chunking.py float32 [A,B,C,L2,L7,L12] [8192,16384]``: for each shape
(conv A/B/C of the benchmark and DeepConvNet's layers 2, 7 and 12, as in
``tools/conv_parts.py``), one layer per setting: "whole" (a bound too large to bind: the
batch's column matrix is written in forward and read back in backward), "default" (no bound
of ours: matrices above 16 MiB are chunked as under a 4 MiB bound) and each workspace bound
given in KiB (``nnlayers.set_workspace_limit``: chunks through small per-thread buffers,
columns recomputed in backward; ``-`` for none). With ``after-reference`` as a fourth
argument, the reference layer's forward+backward on the same shape runs before every timed
call, as in ``python -m nnlayers.bench`` (caches then hold the reference's arrays, not
ours). The layers take the columns + matmul route (forced: the fused kernels never hold
a batch's columns, so the bound does not concern them). The settings alternate call by
call, 11 rounds; printed:
the median ms of each and, in brackets, the median over rounds of its time divided by
"whole"'s in the same round, which the machine's drift affects far less than the medians.
"""

import contextlib
import statistics
import sys

import numpy as np

import nnlayers
from nnlayers import reference
from _timing import alternating_times
from conv_parts import SHAPES, conv_inputs, forced_route, forward_backward

WHOLE = 1 << 62


def column_mib(N, C, H, W, FN, FH, FW, stride, pad, itemsize):
    out_h = (H + 2 * pad - FH) // stride + 1
    out_w = (W + 2 * pad - FW) // stride + 1
    return N * C * FH * FW * out_h * out_w * itemsize / 2**20


def main():
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(SHAPES)
    given = sys.argv[3] if len(sys.argv) > 3 else "8192,16384"
    bounds = [] if given == "-" else [int(kib) << 10 for kib in given.split(",")]
    after_reference = len(sys.argv) > 4 and sys.argv[4] == "after-reference"
    rng = np.random.default_rng(0)
    for name in names:
        x, weights, stride, pad = conv_inputs(name, dtype, rng)

        def setting(bound):
            @contextlib.contextmanager
            def bounded():
                previous = nnlayers.set_workspace_limit(bound)
                try:
                    with forced_route("matmul"):  # the bound shapes only this route
                        yield
                finally:
                    nnlayers.set_workspace_limit(previous)
            return forward_backward(nnlayers, x, weights, stride, pad, bounded)

        runs = {"whole": setting(WHOLE), "default": setting(None)}
        runs.update({f"{bound >> 10} KiB": setting(bound) for bound in bounds})
        reference_call = forward_backward(reference, x, weights, stride, pad)
        times = alternating_times(runs, before=reference_call if after_reference else None)
        whole = times["whole"]
        cells = [f"{label} {statistics.median(t) * 1e3:.2f}"
                 + ("" if label == "whole" else
                    f" ({statistics.median(b / a for a, b in zip(whole, t)):.2f})")
                 for label, t in times.items()]
        mib = column_mib(*SHAPES[name], dtype.itemsize)
        note = " after the reference" if after_reference else ""
        print(f"{name:4s} {dtype.name}{note} columns {mib:5.1f} MiB  " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
