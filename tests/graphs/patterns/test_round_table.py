"""ReConcile round-table over real HTTP to the simulated server."""

from __future__ import annotations

import json

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import round_table
from concilium.graphs.patterns._round_table import recalibrate
from concilium.serving import SimServer


def said(answer: str, confidence: float, why: str = "reasons") -> str:
    return json.dumps({"answer": answer, "confidence": confidence, "rationale": why})


def test_recalibration_boundaries() -> None:
    assert [recalibrate(p) for p in (1.0, 0.9, 0.89, 0.8, 0.79, 0.61, 0.6, 0.0)] == [
        1.0,
        0.8,
        0.5,
        0.5,
        0.3,
        0.3,
        0.1,
        0.1,
    ]
    with pytest.raises(ValueError, match="not between 0 and 1"):
        recalibrate(90)


async def test_weighted_vote_overturns_the_majority_then_grouped_answers_bring_consensus() -> None:
    rules = [
        Rule(agent="a", replies=[said("7", 0.7, "a thinks 7"), said("8", 0.9)]),
        Rule(agent="b", replies=[said("7", 0.7, "b thinks 7"), said("8", 0.9)]),
        Rule(agent="c", replies=[said("8", 1.0, "c is sure"), said("8", 1.0)]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec(capabilities=Capabilities(structured_output=True))
        result = await run(round_table([Agent(n, spec) for n in "abc"], rounds=3), "What is 4 + 4?")
        received = await sim.requests()
    first = result.details["per_round"][0]
    assert first["weights"] == {"7": 0.6, "8": 1.0}  # 0.3 + 0.3 against 1.0: the minority wins
    assert result.details["rounds"] == 2 and result.details["stopped_early"]  # consensus in round 2
    assert len(received) == 6 and result.answer == "8"
    assert all(r["body"]["response_format"]["type"] == "json_schema" for r in received)
    round2 = [r["body"]["messages"][-1]["content"] for r in received[3:]]
    for prompt in round2:  # every agent, its own answer included, sees both groups
        assert "There are 2 agents think the answer is 7." in prompt
        assert "There are 1 agents think the answer is 8." in prompt
        assert "because a thinks 7 My confidence level is 0.7." in prompt and "c is sure" in prompt


async def test_only_the_two_largest_groups_are_shown() -> None:
    rules = [
        Rule(agent=n, replies=[said(v, 0.95, f"{n} says {v}")])
        for n, v in zip("abcd", ["1", "1", "2", "3"], strict=False)
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(round_table([Agent(n, sim.spec()) for n in "abcd"], rounds=2), "q")
        received = await sim.requests()
    prompt = received[-1]["body"]["messages"][-1]["content"]
    assert "d says 3" not in prompt and "c says 2" in prompt and "a says 1" in prompt
    assert result.details["rounds"] == 2 and not result.details["stopped_early"]


async def test_each_agent_sees_the_other_agents_convincing_examples() -> None:
    examples = {"a": ["EXAMPLE-OF-A"], "b": ["EXAMPLE-OF-B"]}
    rules = [Rule(replies=[said("5", 1.0)])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        await run(
            round_table([Agent(n, sim.spec()) for n in "ab"], rounds=1, examples=examples), "q"
        )
        received = {r["agent"]: r["body"]["messages"][-1]["content"] for r in await sim.requests()}
    assert "EXAMPLE-OF-B" in received["a"] and "EXAMPLE-OF-A" not in received["a"]
    assert "EXAMPLE-OF-A" in received["b"] and "EXAMPLE-OF-B" not in received["b"]


async def test_a_failed_call_cancels_the_rounds_other_calls(settled) -> None:
    """The third agent's call is refused by the budget while the other two wait on
    a slow server: the round fails at once and neither request runs to the end."""
    async with SimServer(SimConfig(latency=Latency(fixed=5.0))) as sim:
        with pytest.raises(BudgetExceeded):
            await run(round_table([Agent(n, sim.spec()) for n in "abc"], rounds=1), "q",
                      budget=Budget(max_calls=2))  # fmt: skip
        stats = await settled(sim)
    assert stats["completed"] == 0
