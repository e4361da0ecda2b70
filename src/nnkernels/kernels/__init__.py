"""The kernels and the public functions that validate their arguments and launch them:
columns (im2col/col2im), the fused convolution, matrix products, max pooling, batch norm
and ReLU. Each module registers its public functions' example calls in the kernel table
(:mod:`nnkernels.registry`)."""
