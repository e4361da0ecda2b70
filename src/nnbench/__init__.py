"""Benchmarks of nnkernels, nnlayers and nntrain, kept apart from the product.

* :mod:`nnbench.cases`: the one table of benchmark shapes (layers, column kernels,
  DeepConvNet's convolutions, the networks of the training-step benchmark) and, for each,
  the callables the contenders run;
* :mod:`nnbench.timing`: the one timer (contenders interleaved, warm-up by count and by
  time, medians);
* :mod:`nnbench.compare`: the comparison command (``python -m nnbench.compare``, also
  ``python -m nnlayers.bench``);
* :mod:`nnbench.steps`: training-step timing (``python -m nnbench.steps``, also
  ``python -m nntrain.stepbench``);
* :mod:`nnbench.probe`: the start-up probe the comparison runs in fresh interpreters.

The asv suite (``asv_bench/``) and the scripts in ``tools/`` use the same table and timer.
This package imports ``nnkernels``, ``nnlayers`` and ``nntrain`` through their public API;
they never import it. Importing it does nothing (the probe times ``import nnlayers`` from
the start of its process).
"""
