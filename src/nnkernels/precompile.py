"""``python -m nnkernels.precompile [float32] [float64]``: compile every kernel ahead of a job.

Prints the time taken per dtype (compile on a cold cache, load on a warm one).
"""

import sys

from ._precompile import precompile


def main(argv=None):
    dtypes = (argv if argv is not None else sys.argv[1:]) or ("float32", "float64")
    for name, seconds in precompile(dtypes).items():
        print(f"nnkernels: {name} kernels ready in {seconds:.2f} s")


if __name__ == "__main__":
    main()
