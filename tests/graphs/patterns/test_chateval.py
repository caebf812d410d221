"""ChatEval over real HTTP to the simulated server: who saw what under each strategy,
and the aggregation over both answer orders."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from concilium import GraphError
from concilium.agents import Agent, FakeModel
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import chateval
from concilium.serving import SimServer

QUESTION = "What is 2 + 2? [Answer 1] FOUR [Answer 2] FIVE"


def verdict(a: int, b: int) -> str:
    return f"Evaluation evidence: x\nThe score of Assistant 1: {a}\nThe score of Assistant 2: {b}"


def talk(name: str) -> list[Rule]:
    """Each referee says "<name> says round k" before its final turn."""
    return [Rule(agent=name, replies=[f"{name} says round {k}" for k in (1, 2, 3)])]


def final(name: str, main: tuple[int, int], swapped: tuple[int, int]) -> list[Rule]:
    first = r"Assistant 1's Answer\]\n"
    return [
        Rule(agent=name, match=first + r"FOUR[\s\S]*final turn", replies=[verdict(*main)]),
        Rule(agent=name, match=first + r"FIVE[\s\S]*final turn", replies=[verdict(*swapped)]),
    ]


async def _run(
    strategy: Literal["one_by_one", "simultaneous", "summarizer"], rounds: int, **kw: Any
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    rules = [*final("a", (8, 3), (6, 7)), *final("b", (2, 9), (9, 2)), *talk("a"), *talk("b"),
             Rule(agent="s", replies=["SUMMARY-1", "SUMMARY-2"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1))) as sim:
        spec = sim.spec()
        summ = Agent("s", spec) if strategy == "summarizer" else None
        team = chateval([Agent("a", spec), Agent("b", spec)], strategy=strategy, rounds=rounds,
                        summarizer=summ, **kw)  # fmt: skip
        result = await run(team, QUESTION)
        received = await sim.requests()
        stats = await sim.stats()
    return result, received, stats


def prompts_of(received: list[dict[str, Any]], agent: str) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in received if r["agent"] == agent]


async def test_one_by_one_each_referee_sees_the_earlier_speakers_of_its_round() -> None:
    result, received, stats = await _run("one_by_one", 3, swap=False)
    assert [r["agent"] for r in received] == ["a", "b"] * 3 and stats["max_in_flight"] == 1
    a, b = prompts_of(received, "a"), prompts_of(received, "b")
    assert "[a]:" not in a[0] and "[a]: a says round 1" in b[0]
    assert "[b]: b says round 1" in a[1] and "[a]: a says round 2" not in a[1]
    assert "[a]: a says round 2" in b[1] and "[b]: b says round 2" not in b[1]
    assert "final turn" in a[2] and "final turn" not in a[1]
    saw = [(e["agent"], e["round"], e["saw"]) for e in result.transcript]
    assert saw[:3] == [("a", 1, []), ("b", 1, ["a"]), ("a", 2, ["a", "b"])]


async def test_simultaneous_referees_see_only_earlier_rounds_and_speak_together() -> None:
    _, received, stats = await _run("simultaneous", 2, swap=False)
    assert stats["max_in_flight"] == 2
    a, b = prompts_of(received, "a"), prompts_of(received, "b")
    assert "Discussion so far" not in a[0] and "Discussion so far" not in b[0]
    for prompt in (a[1], b[1]):
        assert "[a]: a says round 1" in prompt and "[b]: b says round 1" in prompt


async def test_summarizer_referees_see_the_summary_of_the_previous_round() -> None:
    result, received, _ = await _run("summarizer", 3, swap=False)
    summaries = prompts_of(received, "s")
    assert len(summaries) == 2  # after rounds 1 and 2, not after the last
    assert "[a]: a says round 1" in summaries[0] and "[b]: b says round 1" in summaries[0]
    assert "round 1" not in summaries[1] and "[b]: b says round 2" in summaries[1]
    a = prompts_of(received, "a")
    assert "[Summarizer]: SUMMARY-1" in a[1] and "says round 1" not in a[1]
    assert "[Summarizer]: SUMMARY-2" in a[2] and "says round 2" not in a[2]
    roles = [e["role"] for e in result.transcript]
    assert roles.count("summarizer") == 2


async def test_average_sums_both_orders_and_majority_breaks_ties_to_assistant_1() -> None:
    # main: a 8/3, b 2/9; swapped back to the original order: a 7/6, b 2/9
    result, received, stats = await _run("simultaneous", 1)
    assert len(received) == 4 and stats["max_in_flight"] == 4  # both orders at once
    assert result.details["tally"] == {"Assistant 1": 19.0, "Assistant 2": 27.0}
    assert result.answer == "Assistant 2"
    voted, _, _ = await _run("simultaneous", 1, aggregation="majority")
    assert voted.details["tally"] == {"Assistant 1": 2.0, "Assistant 2": 2.0, "Tie": 0.0}
    assert voted.answer == "Assistant 1"  # not all equal: the first maximum


def test_summarizer_strategy_needs_a_summarizer() -> None:
    with pytest.raises(GraphError, match="needs a summarizer"):
        chateval([Agent("a", FakeModel({}).spec())], strategy="summarizer")


async def test_an_unparsed_verdict_is_reasked_once_then_counts_as_an_abstention() -> None:
    rules = [
        Rule(agent="a", match="did not end with the two score lines", replies=[verdict(8, 3)]),
        Rule(agent="a", replies=["Answer 1 is right, clearly."]),
        Rule(agent="b", replies=["I prefer answer 2."]),  # never in the format
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec()
        team = chateval([Agent("a", spec), Agent("b", spec)], rounds=1, swap=False)
        result = await run(team, QUESTION)
        received = await sim.requests()
    assert [r["agent"] for r in received] == ["a", "a", "b", "b"] and result.calls == 4
    reask = received[1]["body"]["messages"]
    assert [m["role"] for m in reask] == ["user", "assistant", "user"]
    assert reask[1]["content"] == "Answer 1 is right, clearly."
    assert "The score of Assistant 1: <score>" in reask[2]["content"]
    assert result.details["reasked"] == [{"swapped": False, "referees": ["a", "b"]}]
    assert result.details["abstained"] == [{"swapped": False, "referees": ["b"]}]
    # only the re-asked verdict counts; b's abstention adds nothing
    assert result.details["tally"] == {"Assistant 1": 8.0, "Assistant 2": 3.0}
    assert result.answer == "Assistant 1"
    assert [e.get("step") for e in result.transcript] == [None, "reask", None, "reask"]
