"""Process-wide settings of the fast layers: the convolution workspace bound."""

__all__ = ["set_workspace_limit", "get_workspace_limit", "conv_chunk_size"]

_workspace_limit = None


def set_workspace_limit(nbytes):
    """Bound the column matrix a ``Convolution`` may hold, in bytes (``None``: unbounded).

    With a bound, a batch whose columns would exceed it is processed in chunks of samples,
    and ``backward`` recomputes columns chunk by chunk instead of keeping them from
    ``forward``: less memory, about one extra im2col of time, the same results. At least one
    sample is always processed at a time. Returns the previous setting.
    """
    global _workspace_limit
    if nbytes is not None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"nbytes must be an int or None, got {type(nbytes).__name__} {nbytes!r}")
        if nbytes <= 0:
            raise ValueError(f"nbytes must be positive, got {nbytes}")
    previous, _workspace_limit = _workspace_limit, nbytes
    return previous


def get_workspace_limit():
    """The current convolution workspace bound in bytes, or ``None`` when unbounded."""
    return _workspace_limit


def conv_chunk_size(n_samples, bytes_per_sample):
    """How many samples a convolution processes at once under the workspace bound."""
    n_samples = max(int(n_samples), 1)
    if _workspace_limit is None or bytes_per_sample <= 0:
        return n_samples
    return max(1, min(n_samples, _workspace_limit // bytes_per_sample))
