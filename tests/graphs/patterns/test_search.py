"""Skeleton-of-Thought, Tree-of-Thoughts and confidence-weighted consistency over real HTTP."""

from __future__ import annotations

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget
from concilium.agents.ledger import CallRecord
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import confidence_consistency, skeleton_of_thought, tree_of_thoughts
from concilium.graphs.patterns._tree_of_thoughts import judgement_value
from concilium.serving import SimServer


async def test_skeleton_points_expand_concurrently_and_join_in_outline_order() -> None:
    rules = [Rule(agent="w", replies=["1. Cost\n2. Speed\n3. Comfort"]),
             Rule(agent="x", match="only.*\\n*.*Begin with \"2", replies=["2. Fast."]),
             Rule(agent="x", match="Begin with \"1", replies=["1. Cheap."]),
             Rule(agent="x", replies=["3. Roomy."])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1)), process=True) as sim:
        graph = skeleton_of_thought(Agent("w", sim.spec()), expander=Agent("x", sim.spec()))
        result = await run(graph, "Why take the train?")
        stats = await sim.stats()
    assert stats["max_in_flight"] == 3 and result.calls == 4
    assert result.answer == "1. Cheap.\n2. Fast.\n3. Roomy." and result.details["points"] == [
        "Cost",
        "Speed",
        "Comfort",
    ]


async def test_skeleton_without_points_falls_back_to_a_direct_answer() -> None:
    rules = [Rule(agent="w", replies=["no list here", "a direct answer"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(skeleton_of_thought(Agent("w", sim.spec())), "q")
    assert result.details["fallback"] and result.answer == "a direct answer"


async def test_skeleton_a_failed_point_cancels_the_other_points(settled) -> None:
    """The budget refuses the third point's call while the first two wait on a slow
    server: the run fails at once and neither expansion runs to the end."""
    outline = SimConfig(
        rules=[Rule(replies=["1. Cost\n2. Speed\n3. Comfort"])], latency=Latency(fixed=0)
    )
    async with SimServer(outline) as fast, SimServer(SimConfig(latency=Latency(fixed=5.0))) as slow:
        graph = skeleton_of_thought(Agent("w", fast.spec()), expander=Agent("x", slow.spec()))
        with pytest.raises(BudgetExceeded):  # the outline + 2 of the 3 points
            await run(graph, "Why take the train?", budget=Budget(max_calls=3))
        stats = await settled(slow)
    assert stats["completed"] == 0


def test_judgement_values_use_the_reference_mapping() -> None:
    assert judgement_value(["sure", "sure", "likely"]) == 41.0
    assert judgement_value(["impossible", "maybe?"]) == 0.001


async def test_tree_search_keeps_the_best_states_and_values_duplicates_zero() -> None:
    rules = [Rule(agent="p", match="Steps so far", replies=["Answer: 24"]),
             Rule(agent="p", replies=["good step\nbad step\ngood step"]),
             Rule(agent="v", match="good step", replies=["sure"]),
             Rule(agent="v", replies=["impossible"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = tree_of_thoughts(
            Agent("p", sim.spec()), Agent("v", sim.spec()), depth=2, keep=1, n_evaluate=3
        )
        result = await run(graph, "Make 24 from 4 4 6 6.")
        received = await sim.requests()
    first = result.details["steps"][0]
    assert first["values"] == [60.0, 0.003, 0.0]  # 3 x sure; 3 x impossible; the repeat counts 0
    assert first["kept"] == ["good step"] and result.answer == "24"
    valued = [r for r in received if r["agent"] == "v"]
    assert (
        all(r["body"]["n"] == 3 for r in valued) and len(valued) == 3
    )  # 2 distinct states, then 1


async def test_tree_search_a_refused_value_call_cancels_the_other_values(settled) -> None:
    """The budget refuses the third state's value call while the first two wait on
    a slow evaluator: the run fails at once and neither judgement runs to the end."""
    ideas = SimConfig(rules=[Rule(replies=["s1\ns2\ns3"])], latency=Latency(fixed=0))
    async with SimServer(ideas) as fast, SimServer(SimConfig(latency=Latency(fixed=5.0))) as slow:
        graph = tree_of_thoughts(Agent("p", fast.spec()), Agent("v", slow.spec()), depth=1)
        with pytest.raises(BudgetExceeded):  # the proposal + 2 of the 3 values
            await run(graph, "q", budget=Budget(max_calls=3))
        stats = await settled(slow)
    assert stats["completed"] == 0


async def test_tree_search_records_turns_in_plan_order_and_a_rerun_replays_them() -> None:
    rules = [Rule(agent="p", match="Steps so far", replies=["Answer: 24"]),
             Rule(agent="p", replies=["x\ny"]), Rule(agent="v", replies=["likely"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        proposer, evaluator = Agent("p", sim.spec()), Agent("v", sim.spec())
        graph = tree_of_thoughts(proposer, evaluator, depth=2, keep=2, n_evaluate=1)
        record = CallRecord()
        first = await run(graph, "q", record=record)
        again = await run(graph, "q", record=record)
    roles = [(e["round"], e["role"]) for e in first.transcript]
    assert roles == [(1, "propose"), (1, "value"), (1, "value"), (2, "propose"), (2, "propose"),
                     (2, "value"), (2, "value")]  # fmt: skip
    valued = [e["prompt"] for e in first.transcript if e["role"] == "value"]
    assert "\nx\n" in valued[0] and "\ny\n" in valued[1]  # in proposal order
    assert again.calls == 0 and again.replayed == first.calls == 7
    assert again.transcript == first.transcript


async def test_deepconf_weights_samples_by_their_logprob_confidence() -> None:
    rules = [Rule(agent="s", replies=["\\boxed{1}", "\\boxed{2}", "\\boxed{2}", "\\boxed{1}"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = confidence_consistency(
            Agent("s", sim.spec()), samples=4, keep_percent=50, score="mean"
        )
        result = await run(graph, "q")
        body = (await sim.requests())[0]["body"]
    assert body["n"] == 4 and body["logprobs"] and body["top_logprobs"] == 20
    confs = result.details["confidences"]
    assert len(confs) == 4 and result.details["kept"] == 2
    kept = [e for e in result.transcript if e["kept"]]
    assert sorted(e["confidence"] for e in kept) == sorted(confs)[2:]
    expected = {}
    for e in kept:
        expected[e["answer"]] = expected.get(e["answer"], 0) + e["confidence"]
    assert result.votes["weights"] == {a: round(w, 6) for a, w in expected.items()}


async def test_soft_self_consistency_picks_the_single_most_probable_sample() -> None:
    rules = [Rule(agent="s", replies=["\\boxed{1}", "\\boxed{2}", "\\boxed{3}"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(
            confidence_consistency(Agent("s", sim.spec()), samples=3, method="soft", score="mean"),
            "q",
        )
    confs = result.details["confidences"]
    assert result.details["chosen"] == confs.index(max(confs))
    assert result.answer == str(confs.index(max(confs)) + 1)
