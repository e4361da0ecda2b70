"""Process-wide settings of the fast layers: the convolution workspace bound."""

__all__ = ["set_workspace_limit", "get_workspace_limit", "conv_chunk_size",
           "AUTO_CHUNK_ABOVE", "AUTO_WORKSPACE"]

_workspace_limit = None

#: without a bound of the user's, a batch whose column matrix exceeds this many bytes is
#: processed in chunks as if the bound were ``AUTO_WORKSPACE``: the chunks stay in cache
#: instead of going out to memory and back (conv C and DeepConvNet's second layer 8-15%
#: faster, ``python tools/conv_chunking.py``), and the layer holds far less memory
AUTO_CHUNK_ABOVE = 16 << 20
AUTO_WORKSPACE = 4 << 20


def set_workspace_limit(nbytes):
    """Bound the column matrix a ``Convolution`` may hold, in bytes; returns the previous
    setting.

    With a bound, a batch whose columns would exceed it is processed in chunks of samples,
    and ``backward`` recomputes columns chunk by chunk instead of keeping them from
    ``forward``: less memory, the same results. At least one sample is always processed at
    a time. ``None`` (the default) is automatic: column matrices up to ``AUTO_CHUNK_ABOVE``
    (16 MiB) are kept whole, larger ones are processed as under a ``AUTO_WORKSPACE``
    (4 MiB) bound, which is also faster for them. A bound larger than any column matrix
    (e.g. ``1 << 62``) keeps every batch whole.
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
    """The convolution workspace bound in bytes, or ``None`` when it is automatic."""
    return _workspace_limit


def conv_chunk_size(n_samples, bytes_per_sample):
    """How many samples a convolution processes at once under the workspace bound."""
    n_samples = max(int(n_samples), 1)
    if bytes_per_sample <= 0:
        return n_samples
    limit = _workspace_limit
    if limit is None:
        if n_samples * bytes_per_sample <= AUTO_CHUNK_ABOVE:
            return n_samples
        limit = AUTO_WORKSPACE
    return max(1, min(n_samples, limit // bytes_per_sample))
