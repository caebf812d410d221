"""JSON from outside (a data file, a model's reply, a server's body) read within bounds.

``json.loads`` raises ``RecursionError`` on deep nesting and ``ValueError`` with no
field name on a number of thousands of digits; both end as tracebacks. ``load_json``
turns every such case into ``JsonBoundsError`` (a ``ValueError``, so callers that
already catch ``json.JSONDecodeError`` keep working), naming the bound and the path
of the offending value.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""The deepest nesting of lists and objects accepted."""
MAX_NUMBER_CHARS = 100
"""The longest number literal accepted, in characters (a 64-bit int has 20)."""


class JsonBoundsError(ValueError):
    """JSON that is well-formed but past a bound (too deep, or a number too long)."""


def _number(kind: type[int] | type[float]):
    def parse(literal: str) -> int | float:
        if len(literal) > MAX_NUMBER_CHARS:
            raise JsonBoundsError(
                f"a number of {len(literal)} characters ({literal[:20]}...) is past the "
                f"limit of {MAX_NUMBER_CHARS}; write it as a string if it is an identifier"
            )
        return kind(literal)

    return parse


_parse_int = _number(int)
_parse_float = _number(float)


def check_depth(value: object, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``JsonBoundsError`` if ``value`` nests lists/dicts deeper than ``max_depth``."""
    stack: list[tuple[object, int, str]] = [(value, 0, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise JsonBoundsError(
                    f"JSON nested deeper than {max_depth} levels (at {path}); flatten the structure"
                )
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(child, dict | list):
                    where = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
                    stack.append((child, depth + 1, where[:200]))


def load_json(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with a depth bound and a bound on number literals.

    Raises ``json.JSONDecodeError`` for malformed text and ``JsonBoundsError`` for
    text past a bound; never ``RecursionError``.
    """
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError:
        raise JsonBoundsError(
            f"JSON nested deeper than {max_depth} levels; flatten the structure"
        ) from None
    check_depth(value, max_depth)
    return value
