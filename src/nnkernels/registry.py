"""The table of public functions and their example calls, from which every check derives.

A public function that launches kernels is declared with :func:`examples`, next to its
definition::

    @examples(lambda dtype: [example(np.ones((2, 2, 5, 5), dtype), 3, 3, 1, 1)])
    def im2col(x, filter_h, filter_w, stride=1, pad=0): ...

Precompiling, the one-share-versus-many test, the fuzzer and the start-up probe all read this table
(:func:`table`, :func:`example_calls`), and a test checks that running every example
compiled every kernel (``nnkernels.runtime.jit.all_kernels``): a kernel no example reaches fails it.
"""

import dataclasses

__all__ = ["examples", "example", "Example", "table", "example_calls", "groups"]


@dataclasses.dataclass(frozen=True)
class Example:
    """One call's arguments."""

    args: tuple
    kwargs: dict


def example(*args, **kwargs):
    """An :class:`Example` of a call with these arguments."""
    return Example(args, kwargs)


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered public function: ``make(dtype)`` returns its examples for ``dtype``;
    ``group`` names the functions precompiled together in one process."""

    function: object
    make: object
    group: str


_TABLE = {}


def examples(make, group=None):
    """Register the decorated function with ``make(dtype) -> [Example, ...]``.

    Parameters
    ----------
    make : callable
        Called with a ``numpy.dtype`` (float32 or float64); returns the example calls. It
        may call other registered functions to build inputs (a backward pass's forward).
    group : str, optional
        Functions precompiled in one process (those sharing kernels or inputs); default:
        the function's module.
    """

    def register(function):
        _TABLE[function.__name__] = Entry(
            function, make, group or function.__module__.rsplit(".", 1)[-1]
        )
        return function

    return register


def table():
    """``{name: Entry}`` of every registered function, in registration order (every kernel
    module registers its functions when imported, which ``import nnkernels`` does)."""
    return dict(_TABLE)


def groups():
    """``{group: [name, ...]}`` in registration order."""
    result = {}
    for name, entry in table().items():
        result.setdefault(entry.group, []).append(name)
    return result


def example_calls(dtype, names=None):
    """``[(name, run), ...]``, one per registered function (or per name in ``names``).

    ``run()`` builds the function's example inputs for ``dtype``, calls it on each and
    returns the results.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    calls = []
    for name, entry in table().items():
        if names is not None and name not in names:
            continue
        calls.append((name, _caller(entry, dtype)))
    return calls


def _caller(entry, dtype):
    def run():
        results = []
        for call in entry.make(dtype):
            results.append(entry.function(*call.args, **call.kwargs))
        return results

    return run
