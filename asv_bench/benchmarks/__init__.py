"""asv benchmarks for nnkernels/nnlayers (see asv.conf.json at the repository top level)."""
