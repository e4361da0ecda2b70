"""``python -m nntrain.stepbench``: training-step timing, which lives in :mod:`nnbench.steps`."""

from nnbench.steps import main

if __name__ == "__main__":
    raise SystemExit(main())
