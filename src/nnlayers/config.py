"""The convolution workspace limit under the names earlier releases gave it.

Every setting lives in ``nnkernels.get_config()``; these two functions read and set its
``workspace_limit``.
"""

import nnkernels

__all__ = ["set_workspace_limit", "get_workspace_limit"]


def set_workspace_limit(nbytes):
    """Bound the column matrix a ``Convolution`` may hold, in bytes; returns the previous
    setting.

    With a bound, a batch whose columns would exceed it is processed in chunks of samples,
    and ``backward`` recomputes columns chunk by chunk instead of keeping them from
    ``forward``: less memory, the same results. At least one sample is processed at a time.
    ``None`` (the default) is automatic: column matrices up to
    16 MiB are kept whole, larger ones are processed as under a 4 MiB bound. Same as
    ``nnkernels.set_config(workspace_limit=nbytes)``.

    Parameters
    ----------
    nbytes : int or None
        A positive number of bytes, or None.
    """
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int)):
        raise TypeError(f"nbytes must be an int or None, got {type(nbytes).__name__} {nbytes!r}")
    if nbytes is not None and nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    return nnkernels.set_config(workspace_limit=nbytes)["workspace_limit"]


def get_workspace_limit():
    """The convolution workspace bound in bytes, or ``None`` when it is automatic."""
    return nnkernels.get_config()["workspace_limit"]
