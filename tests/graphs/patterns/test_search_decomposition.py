"""Parallel search decomposition over real HTTP: the queries are at the search tool
at the same time, duplicate passages are merged by reciprocal-rank fusion, and the
answer prompt holds the merged passages."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import Event, run
from concilium.graphs.patterns import search_decomposition
from concilium.graphs.patterns._search_decomposition import fuse_hits, parse_queries
from concilium.serving import SimServer
from concilium.tools import ToolRegistry, ToolText, builtin_tools

RESULTS = {
    "lighthouse year": "[lighthouse.txt] Built in 1874.\n[town.txt] Halvik is a fishing town.",
    "tower height": "[lighthouse.txt] The tower is 32 metres.\n[lighthouse.txt] Built in 1874.",
    "town size": "[town.txt] Halvik is a fishing town.\n[town.txt] 2,400 inhabitants in 2020.",
}


def overlapping_search(expected: int) -> tuple[ToolRegistry, list[int]]:
    """A search that records how many calls are inside it when each enters, and holds
    each call until all ``expected`` have entered (or a deadline passes)."""
    registry = ToolRegistry()
    seen: list[int] = []
    inside = 0
    everyone = asyncio.Event()

    @registry.tool
    async def search(query: str) -> str:
        """Search the documents."""
        nonlocal inside
        inside += 1
        seen.append(inside)
        if inside == expected:
            everyone.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 5.0)
        inside -= 1
        return RESULTS[query]

    return registry, seen


async def test_queries_are_searched_at_once_merged_and_shown_to_the_writer() -> None:
    rules = [
        Rule(agent="a", match="independent search queries",
             replies=["1. lighthouse year\n2. tower height\n- town size\n1. lighthouse year"]),
        Rule(agent="a", replies=["Built in 1874 [lighthouse.txt]."]),
    ]  # fmt: skip
    registry, seen = overlapping_search(3)
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = search_decomposition(Agent("a", sim.spec()), registry, max_queries=3)
        result = await run(
            graph, "When was the lighthouse built, how tall is it, how big is the town?"
        )
        received = await sim.requests()
    assert result.details["queries"] == ["lighthouse year", "tower height", "town size"]
    assert max(seen) == 3  # all three queries inside the tool together
    passages = [(p["id"], p["text"]) for p in result.details["passages"]]
    # six hits, four distinct passages; the two found twice rank first
    assert result.details["hits"] == 6 and len(passages) == 4
    assert set(passages[:2]) == {
        ("lighthouse.txt", "Built in 1874."),
        ("town.txt", "Halvik is a fishing town."),
    }
    answer_prompt = received[-1]["body"]["messages"][-1]["content"]
    for source, passage in passages:
        assert answer_prompt.count(f"[{source}] {passage}") == 1
    assert result.answer == "Built in 1874 [lighthouse.txt]."


def test_fusion_scores_are_reciprocal_ranks_summed() -> None:
    fused = fuse_hits([[("a", "x"), ("b", "y")], [("b", "y"), ("a", "x"), ("c", "z")]], rrf_k=60)
    assert [(s, round(x, 6)) for s, _, x in fused] == [
        ("a", round(1 / 61 + 1 / 62, 6)),
        ("b", round(1 / 62 + 1 / 61, 6)),
        ("c", round(1 / 63, 6)),
    ]


def test_queries_are_bounded_and_distinct() -> None:
    assert parse_queries("q1\nQ1\nq2\nq3\nq4", 3) == ["q1", "q2", "q3"]
    assert parse_queries("\n\n", 3) == []


PASSAGES = {
    "lighthouse year": [{"id": "guide.md#L3", "text": "Built in 1874."}],
    "tower height": [
        {"id": "guide.md#L7", "text": "The tower is 32 metres."},
        {"id": "guide.md#L3", "text": "Built in 1874."},
    ],
}


def passage_search(made: list[str]) -> ToolRegistry:
    """A search whose text names no source (no ``[id]``): the IDs are only in its value."""
    registry = ToolRegistry()

    @registry.tool
    def search(query: str) -> ToolText:
        """Search the documents."""
        made.append(query)
        hits = PASSAGES[query]
        return ToolText("\n".join(h["text"] for h in hits), hits)

    return registry


async def test_searches_are_replayed_on_resume_and_their_ids_are_values(tmp_path) -> None:
    rules = [
        Rule(agent="a", match="independent search queries", replies=["lighthouse year\ntower height"]),
        Rule(agent="a", replies=["Built in 1874 [guide.md#L3]."]),
    ]  # fmt: skip
    made: list[str] = []
    db = tmp_path / "run.db"
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = search_decomposition(Agent("a", sim.spec()), passage_search(made))
        with pytest.raises(BudgetExceeded):  # the searches run, then the writer is over budget
            await run(graph, "When and how tall?", budget=Budget(max_calls=1), state_path=db,
                      run_id="r1")  # fmt: skip
        assert sorted(made) == ["lighthouse year", "tower height"]
        events: list[Event] = []
        result = await run(graph, "When and how tall?", state_path=db, run_id="r1", resume=True,
                           on_event=events.append)  # fmt: skip
        answer_prompt = (await sim.requests())[-1]["body"]["messages"][-1]["content"]
    assert sorted(made) == ["lighthouse year", "tower height"]  # no search made again
    assert (result.tool_calls, result.tools_replayed) == (0, 2)
    tools = sorted((e["key"], e["status"]) for e in events if e["type"] == "tool")
    assert tools == [("search/search/q0", "replayed"), ("search/search/q1", "replayed")]
    assert result.details["passages"] == [
        {"id": "guide.md#L3", "text": "Built in 1874.", "score": round(1 / 61 + 1 / 62, 6)},
        {"id": "guide.md#L7", "text": "The tower is 32 metres.", "score": round(1 / 61, 6)},
    ]
    assert result.details["hits"] == 3
    assert "1. [guide.md#L3] Built in 1874.\n2. [guide.md#L7] The tower" in answer_prompt


async def test_the_built_in_search_gives_its_passage_ids(tmp_path) -> None:
    (tmp_path / "guide.md").write_text("# Halvik\n\nThe lighthouse was built in 1874.\n")
    rules = [
        Rule(agent="a", match="independent search queries", replies=["lighthouse built"]),
        Rule(agent="a", replies=["In 1874."]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        tools = builtin_tools(tmp_path)
        result = await run(search_decomposition(Agent("a", sim.spec()), tools), "When?")
    store = tools.get("search").fn.__self__
    ids = {p.id: p.text for p in store.passages()}
    found = [(p["id"], p["text"]) for p in result.details["passages"]]
    assert found and all(ids[pid] == text for pid, text in found)
