# pyright: strict
"""``ToolText``: a tool's result as text for a model that also carries the structured
value it was written from, so code that calls the tool reads IDs as values instead
of parsing them back out of the text.

It is a ``str``: whatever shows a result to a model (a tool loop, a plan's joiner,
a prompt) keeps working unchanged, and ``str(result)`` is the plain text. The value
must be JSON data: the call ledger records it beside the text, and a resumed run
replays both (``concilium.graphs.use_tool`` hands code the value).

Example:
    >>> found = ToolText("[a.md#L1] Rent is 5.", [{"id": "a.md#L1", "text": "Rent is 5."}])
    >>> found, [hit["id"] for hit in found.value]
    ('[a.md#L1] Rent is 5.', ['a.md#L1'])
"""

from __future__ import annotations

import json
from typing import Any

from concilium._json import load_json


class ToolText(str):
    """Text for a model with the structured ``value`` behind it (JSON data).

    The value is copied through JSON when the text is made (tuples become lists,
    keys strings), so the value a live call gives and the one its replay gives are
    equal. Equality and hashing are the text's.

    Raises:
        TypeError: the value is not JSON data (convert a dataclass with
            ``dataclasses.asdict`` first).
    """

    value: Any

    def __new__(cls, text: str, value: Any = None) -> ToolText:
        try:  # bounded as the call record reads it back (a replay must not fail)
            copied = load_json(json.dumps(value))
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(
                "a ToolText value must be JSON data (dicts, lists, strings, numbers, "
                f"booleans, None) so the call record can replay it: {exc}; convert it "
                "first (dataclasses.asdict for a dataclass)"
            ) from None
        self = super().__new__(cls, text)
        self.value = copied
        return self

    def __reduce__(self) -> tuple[type[ToolText], tuple[str, Any]]:
        # pickle and deepcopy rebuild it through __new__, value included
        return (ToolText, (str(self), self.value))
