"""Reducers: how writes to one state key from parallel branches combine.

A key that a parallel node writes needs one, declared when the graph is made
(``Graph(name, state={"results": reducers.append})``); ``compile()`` refuses the
graph otherwise. ``None`` as a key's reducer means the last write wins.

Example:
    >>> from concilium.graphs import reducers
    >>> reducers.append([1], 2), reducers.append([1], [2, 3])
    ([1, 2], [1, 2, 3])
    >>> reducers.merge({"a": 1}, {"b": 2}), reducers.add(1, 2)
    ({'a': 1, 'b': 2}, 3)
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

__all__ = ["append", "merge", "add"]


def append(left: list[Any] | None, right: Any) -> list[Any]:
    """Concatenate lists (a single item is appended)."""
    left = list(left or ())
    if isinstance(right, list):
        return left + right
    return [*left, right]


def merge(left: Mapping[str, Any] | None, right: Mapping[str, Any] | None) -> dict[str, Any]:
    """Shallow dict update, later writes win per key."""
    return {**(left or {}), **(right or {})}


add = operator.add
"""Numbers add up (lists concatenate)."""
