"""Parallel search decomposition over real HTTP: the queries are at the search tool
at the same time, duplicate passages are merged by reciprocal-rank fusion, and the
answer prompt holds the merged passages."""

from __future__ import annotations

import asyncio
import contextlib

from concilium.agents import Agent
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import search_decomposition
from concilium.graphs.patterns._search_decomposition import fuse_hits, parse_queries
from concilium.serving import SimServer
from concilium.tools import ToolRegistry

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
    passages = [(p["source"], p["passage"]) for p in result.details["passages"]]
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
    fused = fuse_hits(["[a] x\n[b] y", "[b] y\n[a] x\n[c] z"], rrf_k=60)
    assert [(s, round(x, 6)) for s, _, x in fused] == [
        ("a", round(1 / 61 + 1 / 62, 6)),
        ("b", round(1 / 62 + 1 / 61, 6)),
        ("c", round(1 / 63, 6)),
    ]


def test_queries_are_bounded_and_distinct() -> None:
    assert parse_queries("q1\nQ1\nq2\nq3\nq4", 3) == ["q1", "q2", "q3"]
    assert parse_queries("\n\n", 3) == []
