"""``ToolText``: text for a model carrying a JSON value that the call ledger records
and replays, so code that called the tool reads the value after a resume too."""

from __future__ import annotations

import asyncio
import copy
import pickle
from dataclasses import dataclass

import pytest

from concilium.agents.ledger import CallLedger, CallRecord
from concilium.tools import Tool, ToolText


def test_the_value_is_copied_through_json_and_the_text_is_a_plain_string() -> None:
    raw = {"ids": ("a.md#L1",), 3: "three"}
    text = ToolText("[a.md#L1] Rent is 5.", raw)
    assert text == "[a.md#L1] Rent is 5." and type(str(text)) is str
    assert text.value == {"ids": ["a.md#L1"], "3": "three"}  # as a replay would give it
    assert pickle.loads(pickle.dumps(text)).value == text.value == copy.deepcopy(text).value


def test_a_value_that_is_not_json_data_is_refused_with_the_fix() -> None:
    @dataclass
    class Hit:
        id: str

    with pytest.raises(
        TypeError, match=r"JSON data .* type Hit is not JSON serializable; .*dataclasses\.asdict"
    ):
        ToolText("a", [Hit("a.md#L1")])


def test_the_ledger_records_the_value_and_a_replay_gives_it_back() -> None:
    calls: list[str] = []

    async def find(query: str) -> ToolText:
        "Find passages."
        calls.append(query)
        return ToolText(f"[a.md#L1] about {query}", [{"id": "a.md#L1"}])

    tool, record = Tool.from_function(find), CallRecord()

    async def twice() -> tuple[object, object]:
        live, _ = await CallLedger(record=record).tool(tool, {"query": "rent"}, key="k")
        again, replayed = await CallLedger(record=record).tool(tool, {"query": "rent"}, key="k")
        assert replayed
        return live, again

    live, again = asyncio.run(twice())
    assert calls == ["rent"]
    assert isinstance(again, ToolText) and isinstance(live, ToolText)
    assert (
        (again, again.value) == (live, live.value) == ("[a.md#L1] about rent", [{"id": "a.md#L1"}])
    )
