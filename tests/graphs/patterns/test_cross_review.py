"""Exchange-of-Thought cross-review over real HTTP to the simulated server: who reads
whom under each topology, confidence from round 2, the stop rule and the final vote."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from concilium.agents import Agent
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import cross_review
from concilium.graphs.patterns._cross_review import readers
from concilium.serving import SimServer

Topology = Literal["memory", "report", "relay", "debate"]


def said(name: str, *answers: str) -> Rule:
    return Rule(
        agent=name, replies=[f"{name} path {k}: \\boxed{{{a}}}" for k, a in enumerate(answers)]
    )


async def _run(
    topology: Topology, rules: list[Rule], rounds: int = 3
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1))) as sim:
        spec = sim.spec()
        graph = cross_review([Agent(n, spec) for n in "abc"], topology=topology, rounds=rounds)
        result = await run(graph, "What is 2 + 2?")
        received = await sim.requests()
        stats = await sim.stats()
    return result, received, stats


def round_prompts(received: list[dict[str, Any]], k: int) -> dict[str, str]:
    """Each agent's user message of its k-th call (0-based)."""
    seen: dict[str, list[str]] = {}
    for r in received:
        seen.setdefault(r["agent"], []).append(r["body"]["messages"][-1]["content"])
    return {agent: calls[k] for agent, calls in seen.items()}


@pytest.mark.parametrize("topology", ["memory", "report", "relay", "debate"])
async def test_each_path_reads_exactly_its_topology_peers(topology: Topology) -> None:
    rules = [said("a", "1", "4"), said("b", "2", "4"), said("c", "3", "4")]
    result, received, stats = await _run(topology, rules)
    assert stats["max_in_flight"] == 3  # a round's paths run together
    prompts = round_prompts(received, 1)
    for i, name in enumerate("abc"):
        shown = {peer for peer in "abc" if f"{peer}'s Solution: {peer} path 0" in prompts[name]}
        assert shown == {"abc"[j] for j in readers(topology, 3)[i]}, (topology, name)
        assert f"Your Solution: {name} path 0" in prompts[name]
        assert "confidence in this solution" not in prompts[name]  # round 1 of the exchange
    # all agree after one exchange: stop, the vote is unanimous
    assert result.details["rounds"] == 1 and len(received) == 6 and result.answer == "4"


async def test_unanimous_first_answers_need_no_exchange() -> None:
    result, received, _ = await _run("memory", [said(n, "4") for n in "abc"])
    assert len(received) == 3 and result.details["rounds"] == 0 and result.answer == "4"


async def test_confidence_is_shown_from_the_second_exchange_and_the_majority_wins() -> None:
    rules = [
        said("a", "4", "4", "4", "4"),
        said("b", "5", "4", "5", "5"),
        said("c", "4", "5", "4", "4"),
    ]
    result, received, _ = await _run("memory", rules, rounds=3)
    assert len(received) == 12 and result.details["rounds"] == 3  # never unanimous: all rounds
    second = round_prompts(received, 2)
    assert "b's confidence in this solution is: 0.5" in second["a"]  # b said 5, 4
    assert "a's confidence in this solution is: 1.0" in second["b"]
    assert result.answer == "4" and result.votes["counts"] == {"4": 2, "5": 1}
    assert result.details["confidence"] == {"a": 1.0, "b": 0.75, "c": 0.75}
