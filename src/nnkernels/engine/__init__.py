"""Objects that run a layer's computation on the kernels and the runtime: the convolution
engine (:mod:`.convolution`)."""
