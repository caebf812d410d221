"""Best-of-N, knockout and universal self-consistency over real HTTP to the simulated server."""

from __future__ import annotations

import pytest

from concilium import BudgetExceeded, OutputParseError
from concilium.agents import Agent, AgentReply, Budget, TokenLogprob, Usage
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import (
    best_of_n,
    knockout,
    universal_self_consistency,
    yes_probability,
)
from concilium.serving import SimServer

CANDIDATES = Rule(agent="gen", replies=["\\boxed{5}", "\\boxed{5}", "\\boxed{7}"])


def scores(*pairs: tuple[str, str]) -> list[Rule]:
    return [Rule(agent="judge", match=m, replies=[r]) for m, r in pairs]


async def test_every_candidate_is_scored_concurrently_and_the_best_wins() -> None:
    rules = [CANDIDATES, *scores(("boxed\\{5\\}", "so-so. Score: 4"), ("boxed\\{7\\}", "Score: 7"))]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1)), process=True) as sim:
        spec = sim.spec()
        best = await run(best_of_n(Agent("gen", spec), Agent("judge", spec), n=3), "q")
        stats = await sim.stats()
        await sim.reset()
        pooled = await run(
            best_of_n(Agent("gen", spec), Agent("judge", spec), n=3, weighted=True), "q"
        )
    assert best.answer == "7" and best.details["chosen"] == 2 and best.calls == 4
    assert [c["score"] for c in best.details["candidates"]] == [4.0, 4.0, 7.0]
    assert stats["max_in_flight"] == 3  # the three judge calls at once
    assert pooled.answer == "5"  # 4 + 4 for "5" beats 7 for "7"


async def test_verifier_asks_for_one_token_with_logprobs() -> None:
    rules = [CANDIDATES, *scores(("boxed\\{5\\}", "No"), ("boxed\\{7\\}", "Yes"))]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(
            best_of_n(Agent("gen", sim.spec()), Agent("judge", sim.spec()), n=3, mode="verifier"),
            "q",
        )
        judged = [r["body"] for r in await sim.requests() if r["agent"] == "judge"]
    assert result.answer == "7"
    assert all(b["max_tokens"] == 1 and b["logprobs"] and b["top_logprobs"] == 5 for b in judged)


def test_yes_probability_normalises_yes_against_no() -> None:
    import math

    top = (("Yes", math.log(0.6)), (" no", math.log(0.2)), ("Maybe", math.log(0.2)))

    def reply(text: str, logprobs: tuple = ()) -> AgentReply:
        return AgentReply(
            agent="j", texts=(text,), usage=Usage(), latency_s=0.0, model="m", logprobs_all=logprobs
        )

    assert yes_probability(
        reply("Yes", ((TokenLogprob("Yes", math.log(0.6), top),),))
    ) == pytest.approx(0.75)
    assert yes_probability(reply("No.")) == 0.0 and yes_probability(reply("yes, it is")) == 1.0


async def test_knockout_bracket_has_byes_and_n_minus_one_matches() -> None:
    rules = [
        Rule(agent="gen", replies=[f"\\boxed{{{i}}}" for i in range(5)]),
        Rule(agent="judge", replies=["Winner: 2"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1)), process=True) as sim:
        spec = sim.spec()
        result = await run(knockout(Agent("gen", spec), Agent("judge", spec), n=5, seed=1), "q")
        stats = await sim.stats()
    bracket = result.details["bracket"]
    assert [len(r["matches"]) for r in bracket] == [2, 1, 1] and result.calls == 1 + 4
    assert (
        bracket[0]["bye"] is not None
        and bracket[1]["bye"] is not None
        and bracket[2]["bye"] is None
    )
    assert stats["max_in_flight"] == 2  # round 1's two matches together
    final = bracket[-1]["matches"][0]
    assert (
        final["winner"] == final["pair"][1] == result.details["champion"]
    )  # "Winner: 2" every time
    assert result.answer == str(result.details["champion"])


async def test_knockout_verdict_without_a_winner_is_a_marked_tie_break() -> None:
    rules = [
        Rule(agent="gen", replies=["\\boxed{1}", "\\boxed{2}"]),
        Rule(agent="judge", replies=["both look fine"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(knockout(Agent("gen", sim.spec()), Agent("judge", sim.spec()), n=2), "q")
    match = result.details["bracket"][0]["matches"][0]
    assert match["tie_break"] and match["winner"] == match["pair"][0]


async def test_usc_lists_responses_from_zero_and_takes_the_named_one() -> None:
    rules = [Rule(agent="gen", replies=["red", "blue", "blue"]),
             Rule(agent="pick", replies=["The most consistent response is Response 2.", "I cannot decide"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec()
        result = await run(
            universal_self_consistency(Agent("gen", spec), Agent("pick", spec), n=3),
            "Favourite colour?",
        )
        prompt = (await sim.requests())[-1]["body"]["messages"][-1]["content"]
        with pytest.raises(OutputParseError, match="I cannot decide"):
            await run(
                universal_self_consistency(Agent("gen", spec), Agent("pick", spec), n=3), "again"
            )
    assert "Response 0: red\nResponse 1: blue\nResponse 2: blue" in prompt
    assert result.details["chosen"] == 2 and result.answer == "blue"


@pytest.mark.parametrize("pattern", ["best_of_n", "knockout"])
async def test_a_failed_judge_call_cancels_the_other_judges(pattern: str, settled) -> None:
    """The budget refuses one judge call (best_of_n: the third of three; knockout:
    the second match of round 1) while the others wait on a slow server: the run
    fails at once and no judge request runs to the end."""
    fast, slow = SimConfig(latency=Latency(fixed=0)), SimConfig(latency=Latency(fixed=5.0))
    async with SimServer(fast) as generating, SimServer(slow) as judging:
        gen, judge = Agent("gen", generating.spec()), Agent("judge", judging.spec())
        graph = best_of_n(gen, judge, n=3) if pattern == "best_of_n" else knockout(gen, judge, n=4)
        with pytest.raises(BudgetExceeded):  # 1 generation + 2 judge calls, or + 1 match
            await run(graph, "q", budget=Budget(max_calls=3 if pattern == "best_of_n" else 2))
        stats = await settled(judging)
    assert stats["completed"] == 0
