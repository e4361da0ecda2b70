"""The process side of the kernels: compiling (:mod:`.jit`), the library's own BLAS
(:mod:`.blas`), helper threads (:mod:`.helpers`), how work is shared over threads
(:mod:`.partition`) and the process-wide state all of them keep (:mod:`.process`). Imports
no kernel module."""
