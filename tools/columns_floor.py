"""The drop-in ``im2col``/``col2im`` against the fresh-array floor, on every conv case.

``python tools/columns_floor.py``: for conv A, B, C (their inputs and filters), both dtypes,
times interleaved in one run (``nnbench.timing.time_interleaved``, 15 rounds):
``nnkernels.im2col`` (result ``(N*out_h*out_w, C*FH*FW)``), ``nnkernels.col2im`` (result
``(N, C, H, W)``), and for each the *floor*: every Numba thread writing its share of a
fresh array of the result's size and dtype (``threaded_fill`` of
``tools/allocation_cost.py``), which any function returning a new array pays; for col2im
also the *read floor*: every thread reading its share of the columns (9-25 times the
result's size) and writing its share of a fresh result. Prints median milliseconds and
the median over rounds of each ratio. ``--quick``: batches of 4, 2 rounds (a smoke test).
"""

import argparse

import numba
import numpy as np
from allocation_cost import threaded_fill
from numba import njit, prange

import nnkernels
from nnbench.cases import DTYPES, case_data, get_cases
from nnbench.timing import median_ratio, time_interleaved


@njit(parallel=True)  # (not cached: it reads the thread count at run time)
def _read_and_fill(src, dst):
    """Every thread sums its share of ``src`` and fills its share of ``dst`` (1-D both)."""
    parts = numba.get_num_threads()
    for part in prange(parts):
        total = 0.0
        for i in range(part * src.size // parts, (part + 1) * src.size // parts):
            total += src[i]
        for i in range(part * dst.size // parts, (part + 1) * dst.size // parts):
            dst[i] = total


def _fresh_fill(shape, dtype):
    size = int(np.prod(shape))
    return lambda: threaded_fill(np.empty(size, dtype=dtype), 0.0)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/columns_floor.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    repeat = 2 if args.quick else 15
    print(f"{numba.get_num_threads()} threads; ms, medians of {repeat} interleaved rounds")
    print("case  dtype     im2col  floor  ratio   col2im  floor  ratio   read floor  ratio")
    for case in get_cases("conv_a,conv_b,conv_c"):
        case = case.scaled(args.quick)
        fh, fw = case.params["filter"]
        stride, pad = case.params["stride"], case.params["pad"]
        for dtype in DTYPES:
            x = case_data(case, dtype)["x"]
            col = nnkernels.im2col(x, fh, fw, stride, pad)
            contenders = {
                "im2col": lambda: nnkernels.im2col(x, fh, fw, stride, pad),
                "im2col floor": _fresh_fill(col.shape, col.dtype),
                "col2im": lambda: nnkernels.col2im(col, x.shape, fh, fw, stride, pad),
                "col2im floor": _fresh_fill(x.shape, x.dtype),
                "col2im read floor": lambda: _read_and_fill(
                    col.reshape(-1), np.empty(x.size, dtype=x.dtype)
                ),
            }
            timed = time_interleaved(contenders, repeat)
            cells = []
            for name in ("im2col", "col2im"):
                (kernel, kernel_times), (floor, floor_times) = timed[name], timed[name + " floor"]
                ratio = median_ratio(kernel_times, floor_times)
                cells.append(f"{kernel * 1e3:6.2f} {floor * 1e3:6.2f} {ratio:5.2f}x")
            read_floor = median_ratio(timed["col2im"][1], timed["col2im read floor"][1])
            cells.append(f"{timed['col2im read floor'][0] * 1e3:6.2f} {read_floor:5.2f}x")
            print(f"{case.short:4}  {dtype}  " + "   ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
