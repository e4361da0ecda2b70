"""Checking a random generator's state read from a checkpoint before NumPy sees it.

NumPy's state setters trust the positions they are given: an MT19937 ``pos`` past 624 or
a Philox ``buffer_pos`` past 4 reads outside the generator's own arrays. A state read from
a file must therefore have the structure of the generator's current state (same keys,
lengths, array shapes and dtypes, the same bit generator) and every number in its range.
"""

import math

import numpy as np

from ._untrusted import LoadError, describe

__all__ = ["check_rng_state"]

#: bit generators whose state fields are known here
KNOWN_BIT_GENERATORS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")
#: largest value of each bounded int field; other ints are below 2**128
_LIMITS = {"pos": 624, "buffer_pos": 4, "has_uint32": 1, "has_gauss": 1, "uinteger": 2**32 - 1}
#: the fields of the legacy ``RandomState.get_state()`` tuple
_LEGACY_FIELDS = ("bit_generator", "key", "pos", "has_gauss", "cached_gaussian")


def check_rng_state(state, template, source, key):
    """Refuse ``state`` unless it is a well-formed state shaped like ``template`` (the
    generator's own current state: a legacy tuple or a bit generator's dict)."""
    name = template[0] if isinstance(template, tuple) else template.get("bit_generator")
    if name not in KNOWN_BIT_GENERATORS:
        raise LoadError(f"{source}: {key}: cannot check a state of bit generator {name!r}")
    _check_like(state, template, source, key, None)


def _check_like(value, template, source, where, field):
    def refuse(expected):
        raise LoadError(f"{source}: {where}: expected {expected}, found {describe(value)}")

    if isinstance(template, dict):
        if type(value) is not dict or set(value) != set(template):
            refuse(f"a dict with keys {sorted(template)}")
        for name, part in template.items():
            _check_like(value[name], part, source, f"{where}[{name!r}]", name)
    elif isinstance(template, tuple):
        if type(value) is not tuple or len(value) != len(template):
            refuse(f"a tuple of length {len(template)}")
        fields = _LEGACY_FIELDS if len(template) == len(_LEGACY_FIELDS) else (None,) * len(template)
        for index, part in enumerate(template):
            _check_like(value[index], part, source, f"{where}[{index}]", fields[index])
    elif isinstance(template, np.ndarray):
        if (
            type(value) is not np.ndarray
            or value.dtype != template.dtype
            or value.shape != template.shape
        ):
            refuse(f"an array of shape {template.shape} and dtype {template.dtype}")
    elif isinstance(template, str):
        if type(value) is not str or value != template:
            refuse(repr(template))
    elif isinstance(template, (float, np.floating)):
        if not isinstance(value, (float, np.floating)) or not math.isfinite(value):
            refuse("a finite float")
    elif isinstance(template, (int, np.integer)) and not isinstance(template, bool):
        limit = _LIMITS.get(field, 2**128 - 1)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not 0 <= value <= limit
        ):
            refuse(f"an int from 0 to {limit}")
    else:
        refuse(f"a value like {describe(template)}")
