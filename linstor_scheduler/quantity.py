"""Kubernetes resource quantities (``10Gi``, ``500M``, ``1e9``) in bytes."""

from __future__ import annotations

import functools
import re
from typing import Any

_QUANTITY = re.compile(r"^\s*([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 10**-3,
}


def parse_quantity(text: Any) -> int | None:
    """A Kubernetes resource quantity (``10Gi``, ``500M``, ``1e9``) in bytes; None if unparsable."""
    if isinstance(text, int | float):
        return int(text)
    if not isinstance(text, str):
        return None
    return _parse_quantity_text(text)


@functools.lru_cache(maxsize=4096)
def _parse_quantity_text(text: str) -> int | None:
    """Cached: every request re-reads the sizes of its claims, and there are few distinct ones."""
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _SUFFIX:
        return None
    try:
        return int(float(match.group(1)) * _SUFFIX[match.group(2)])
    except ValueError:
        return None
