"""Every setting of ``nnkernels`` and ``nnlayers``: read it, set it, or change it for a block.

======================  ===========  ======================================================
setting                 default      meaning
======================  ===========  ======================================================
``threads``             ``None``     threads a call of the library may use (the calling
                                     thread and helper threads); ``None``: Numba's count in
                                     the calling thread where other code started Numba's
                                     threading layer, else ``NUMBA_NUM_THREADS``
``parallel_threshold``  ``32768``    elements of work below which a call runs in the
                                     calling thread alone (same results)
``split_min_macs``      ``4194304``  multiply-adds below which a convolution is not shared
                                     over threads
``workspace_limit``     ``None``     bytes of columns a ``Convolution`` may hold at once;
                                     ``None``: automatic (see ``AUTO_CHUNK_ABOVE``)
``conv_route``          ``"auto"``   ``"auto"``, ``"kernels"`` (the fused convolution
                                     kernels, where available) or ``"matmul"`` (columns and
                                     matrix products)
======================  ===========  ======================================================

:func:`set_config` changes the process-wide values; :func:`config_context` changes them for
the calling thread within a ``with`` block (threads the library starts for that call inherit
them). Nothing here is read at import: every setting is looked up when it is used.

``blas_spin_exponent`` (which restarted NumPy's BLAS thread pool) and ``threading_layer``
(which chose Numba's threading layer) are accepted with a ``DeprecationWarning`` and have
no effect: the library computes on a BLAS of its own and never starts Numba's threading
layer.
"""

import contextlib
import threading
import warnings

__all__ = [
    "get_config",
    "set_config",
    "config_context",
    "get",
    "AUTO_CHUNK_ABOVE",
    "AUTO_WORKSPACE",
    "CONV_ROUTES",
]

#: with ``workspace_limit=None``, a batch whose column matrix exceeds this many bytes is
#: processed in chunks as if the limit were ``AUTO_WORKSPACE``: the chunks stay in cache
AUTO_CHUNK_ABOVE = 16 << 20
AUTO_WORKSPACE = 4 << 20

CONV_ROUTES = ("auto", "kernels", "matmul")

_DEFAULTS = {
    "threads": None,
    "parallel_threshold": 1 << 15,
    "split_min_macs": 1 << 22,
    "workspace_limit": None,
    "conv_route": "auto",
}
#: settings that are accepted and ignored, with a DeprecationWarning saying why
_DEPRECATED = {
    "blas_spin_exponent": "it has no effect: nnkernels computes on a BLAS of its own and never "
    "changes NumPy's (remove the setting)",
    "threading_layer": "it has no effect: nnkernels never starts Numba's threading layer; its "
    "kernels run on its own threads (remove the setting)",
}


def _int_at_least(minimum, maximum=None, optional=False):
    def check(name, value):
        if value is None and optional:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            expected = "an int or None" if optional else "an int"
            raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"{name} must be {bound}, got {value}")
        return value

    return check


def _one_of(choices, optional=False):
    def check(name, value):
        if value is None and optional:
            return value
        if value not in choices:
            allowed = ", ".join(repr(choice) for choice in choices)
            raise ValueError(
                f"{name} must be one of {allowed}{' or None' if optional else ''}, got {value!r}"
            )
        return value

    return check


_CHECKS = {
    "threads": _int_at_least(1, optional=True),
    "parallel_threshold": _int_at_least(0),
    "split_min_macs": _int_at_least(0),
    "workspace_limit": _int_at_least(1, optional=True),
    "conv_route": _one_of(CONV_ROUTES),
}

_global = dict(_DEFAULTS)
_lock = threading.Lock()
_local = threading.local()  # .overrides: the settings config_context changed in this thread


def _checked(settings):
    for name in sorted(set(settings) & set(_DEPRECATED)):
        warnings.warn(
            f"setting {name!r} is deprecated: {_DEPRECATED[name]}", DeprecationWarning, stacklevel=3
        )
    settings = {name: value for name, value in settings.items() if name not in _DEPRECATED}
    unknown = sorted(set(settings) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(_DEFAULTS)}")
    return {name: _CHECKS[name](name, value) for name, value in settings.items()}


def _overrides():
    return getattr(_local, "overrides", None) or {}


def get(name):
    """The value of one setting as seen by the calling thread.

    Parameters
    ----------
    name : str
        A setting's name (see the module's table).
    """
    overrides = _overrides()
    if name in overrides:
        return overrides[name]
    try:
        return _global[name]
    except KeyError:
        raise TypeError(f"unknown setting {name!r}; known: {', '.join(_DEFAULTS)}") from None


def get_config():
    """Every setting as seen by the calling thread, as a new ``dict``."""
    return {**_global, **_overrides()}


def set_config(**settings):
    """Change settings for the whole process; returns their previous values as a ``dict``.

    Examples
    --------
    >>> previous = set_config(workspace_limit=64 << 20)
    >>> set_config(**previous)  # restore
    {'workspace_limit': 67108864}
    """
    settings = _checked(settings)
    with _lock:
        previous = {name: _global[name] for name in settings}
        _global.update(settings)
    return previous


@contextlib.contextmanager
def config_context(**settings):
    """Within this block, the calling thread sees ``settings`` instead of the global values.

    Examples
    --------
    >>> with config_context(conv_route="matmul", parallel_threshold=0):
    ...     pass
    """
    settings = _checked(settings)
    previous = getattr(_local, "overrides", None)
    _local.overrides = {**(previous or {}), **settings}
    try:
        yield
    finally:
        _local.overrides = previous


def snapshot():
    """The calling thread's overrides, to hand to a thread the library starts for it."""
    return dict(_overrides())


@contextlib.contextmanager
def inherited(overrides):
    """Apply a :func:`snapshot` taken in another thread to this one within the block."""
    previous = getattr(_local, "overrides", None)
    _local.overrides = dict(overrides) or None
    try:
        yield
    finally:
        _local.overrides = previous
