"""``python -m nnlayers.bench``: the comparison command, which lives in :mod:`nnbench.compare`."""

from nnbench.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
