"""Debate (Du et al.) over real HTTP to the simulated server."""

from __future__ import annotations

import re

import pytest

from concilium import GraphError
from concilium.agents import Agent, FakeModel
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import as_agent, run
from concilium.graphs.patterns import debate, self_consistency
from concilium.serving import SimServer

SOLUTION = re.compile(r"One agent solution: ```(.*?)```", re.S)


async def test_three_agents_two_rounds_make_six_calls_and_see_exactly_the_others() -> None:
    rules = [
        Rule(agent="a", replies=["A1 \\boxed{84}", "A2 \\boxed{84}"]),
        Rule(agent="b", replies=["B1 \\boxed{48}", "B2 \\boxed{84}"]),
        Rule(agent="c", replies=["C1 \\boxed{84}", "C2 \\boxed{84}"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1)), process=True) as sim:
        agents = [Agent(n, sim.spec(), temperature=0.7) for n in "abc"]
        result = await run(debate(agents, rounds=2), "What is 12 * 7?")
        received = await sim.requests()
        stats = await sim.stats()

    assert result.calls == 6 and len(received) == 6
    assert stats["max_in_flight"] == 3  # each round's three calls ran at once
    assert result.answer == "84" and result.votes["counts"] == {"84": 3}
    assert result.details["per_round"][0]["answers"] == {"a": "84", "b": "48", "c": "84"}

    second = {r["agent"]: r["body"]["messages"] for r in received[3:]}
    first_texts = {"a": "A1 \\boxed{84}", "b": "B1 \\boxed{48}", "c": "C1 \\boxed{84}"}
    for name, messages in second.items():
        shown = SOLUTION.findall(messages[-1]["content"])
        assert shown == [first_texts[o] for o in "abc" if o != name]
        # its own history: initial question, its own round-1 answer, the debate prompt
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[1]["content"] == first_texts[name]
        assert "What is 12 * 7?" in messages[0]["content"]
    entries = {(e["agent"], e["round"]): e for e in result.transcript}
    assert entries[("a", 2)]["saw"] == ["b", "c"]


async def test_round_r_sees_round_r_minus_1_not_the_current_round() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: f"{agent} round {i + 1} \\boxed{{{i}}}")
    agents = [Agent(n, fake.spec()) for n in ("x", "y")]
    await run(debate(agents, rounds=3), "q")
    third = fake.requests_of("x")[2].messages[-1]["content"]
    assert SOLUTION.findall(third) == ["y round 2 \\boxed{1}"]


async def test_one_agent_gets_the_reflection_prompt() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: "\\boxed{3}")
    result = await run(debate([Agent("solo", fake.spec())], rounds=2), "1+2?")
    assert result.calls == 2
    assert "double-check" in fake.requests[1].messages[-1]["content"]


async def test_agents_may_use_different_models() -> None:
    small, big = FakeModel(default="\\boxed{1}"), FakeModel(default="\\boxed{2}")
    result = await run(
        debate([Agent("s", small.spec("small")), Agent("b", big.spec("big"))], rounds=1), "q"
    )
    assert result.details["per_round"][0]["answers"] == {"s": "1", "b": "2"}
    assert result.answer == "1"  # a tie goes to the first agent in order


async def test_a_debater_can_be_a_self_consistency_ensemble() -> None:
    def reply(agent: str, i: int, msgs) -> str:
        return "\\boxed{7}" if agent == "crowd" else "\\boxed{9}"

    fake = FakeModel(fn=reply)
    crowd = as_agent(self_consistency(Agent("crowd", fake.spec()), samples=5), "crowd_vote")
    result = await run(debate([Agent("solo", fake.spec()), crowd], rounds=2), "q")
    assert result.details["per_round"][1]["answers"] == {"solo": "9", "crowd_vote": "7"}
    crowd_turns = [e for e in result.transcript if e["agent"] == "crowd_vote"]
    assert [t["completion_tokens"] for t in crowd_turns] == [
        5,
        5,
    ]  # its 5 one-word samples, not the others'
    crowd_requests = fake.requests_of("crowd")
    assert len(crowd_requests) == 2 and all(r.body["n"] == 5 for r in crowd_requests)
    # in round 2 the ensemble is given the debate conversation, not a fresh prompt
    assert SOLUTION.findall(crowd_requests[1].messages[-1]["content"]) == ["\\boxed{9}"]


def test_duplicate_agent_names_are_rejected() -> None:
    fake = FakeModel()
    with pytest.raises(GraphError, match="distinct names"):
        debate([Agent("a", fake.spec()), Agent("a", fake.spec())])
