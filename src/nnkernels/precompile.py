"""``python -m nnkernels.precompile [float32] [float64] [--processes N]``: compile every
kernel ahead of a job.

Prints the wall time (compile on a cold cache, load on a warm one), split per dtype.
"""

import argparse
import sys
import time

from ._precompile import _default_processes, precompile


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m nnkernels.precompile",
        description="Compile every nnkernels kernel into Numba's cache.",
    )
    parser.add_argument(
        "dtypes",
        nargs="*",
        default=["float32", "float64"],
        help="dtypes to compile for (default: float32 float64)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help=f"worker processes (default: one per core, here {_default_processes()}; "
        "1 = compile in this process)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        timings = precompile(args.dtypes, processes=args.processes, load=False)
    except KeyboardInterrupt:
        print(
            "nnkernels: precompile interrupted; the kernels compiled so far are cached, "
            "run it again to compile the rest",
            file=sys.stderr,
        )
        return 130
    for name, seconds in timings.items():
        print(f"nnkernels: {name} kernels ready ({seconds:.2f} s of the wall time)")
    print(f"nnkernels: every kernel ready in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
