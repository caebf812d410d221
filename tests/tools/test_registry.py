"""Typed tools: schemas from type hints, validation, timeouts, sync tools off the loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from concilium.tools import Tool, ToolError, ToolRegistry, builtin_tools
from concilium.tools._builtin import calculator


def test_the_schema_models_see_comes_from_type_hints_and_the_docstring() -> None:
    def lookup(city: str, year: int = 2024, exact: bool = False) -> str:
        """Population of a city."""
        return city

    schema = Tool.from_function(lookup).schema()["function"]
    assert schema["name"] == "lookup" and schema["description"] == "Population of a city."
    props = schema["parameters"]["properties"]
    assert (
        props["city"]["type"] == "string"
        and props["year"]["type"] == "integer"
        and props["year"]["default"] == 2024
    )
    assert schema["parameters"]["required"] == ["city"]
    assert Tool.from_function(lookup).idempotent and not Tool.from_function(lookup).side_effects


async def test_bad_arguments_say_which_and_why() -> None:
    registry = ToolRegistry()

    @registry.tool
    def add(a: int, b: int) -> int:
        "Add."
        return a + b

    assert await registry.call("add", {"a": "2", "b": 3}) == 5  # pydantic's coercion
    with pytest.raises(
        ToolError, match="bad arguments for add: b: Input should be a valid integer"
    ):
        await registry.call("add", {"a": 1, "b": "three"})
    with pytest.raises(ToolError, match="Did you mean 'add'"):
        await registry.call("ad", {})
    with pytest.raises(ToolError, match="takes 2 argument"):
        registry.get("add").bind([1, 2, 3])


async def test_a_sync_tool_runs_in_a_thread_and_an_async_one_times_out() -> None:
    registry = ToolRegistry()

    release = threading.Event()
    ran_on: list[int] = []

    @registry.tool
    def blocking() -> str:
        "Block until released (by the event loop, which must stay free meanwhile)."
        ran_on.append(threading.get_ident())
        return "released" if release.wait(10) else "never released"

    @registry.tool(timeout=0.1)
    async def hang() -> str:
        "Never ends."
        await asyncio.sleep(10)
        return "no"

    async def release_it() -> None:
        release.set()  # runs only if the blocking tool left the loop free

    result, _ = await asyncio.gather(registry.call("blocking", {}), release_it())
    assert result == "released" and ran_on != [threading.get_ident()]
    with pytest.raises(ToolError, match=r"did not finish within 0\.1 s"):
        await registry.call("hang", {})


def test_calculator_never_evaluates_code() -> None:
    assert calculator("(12 * 7) / 4") == "21"
    with pytest.raises(ToolError, match="plain arithmetic"):
        calculator("__import__('os').system('true')")


async def test_document_search_ranks_passages_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("The lighthouse was built in 1874.\n\nCats sleep a lot.")
    (tmp_path / "b.md").write_text("The keeper of the lighthouse stayed 30 years.")
    tools = builtin_tools(tmp_path)
    assert sorted(tools.names()) == ["calculator", "read", "search"]
    hits = str(await tools.call("search", {"query": "when was the lighthouse built"}))
    assert hits.splitlines()[0] == "[a.txt#L1] The lighthouse was built in 1874."
    assert "b.md#L1" in hits and "Cats" not in hits
