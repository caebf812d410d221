"""Mixture-of-Agents and Sparse MoA over real HTTP to the simulated server."""

from __future__ import annotations

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, ModelSpec
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import as_agent, run
from concilium.graphs.patterns import debate, mixture_of_agents
from concilium.serving import SimServer


def proposers(spec, names="pqr"):
    return [Agent(n, spec) for n in names]


async def test_each_layer_sees_the_previous_layers_responses_numbered_in_a_system_prompt() -> None:
    rules = [Rule(agent=n, replies=[f"{n}-layer1", f"{n}-layer2"]) for n in "pqr"] + [
        Rule(agent="agg", replies=["final"])
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1)), process=True) as sim:
        spec = sim.spec()
        result = await run(
            mixture_of_agents(proposers(spec), Agent("agg", spec), layers=3), "Plan a picnic."
        )
        received = await sim.requests()
        stats = await sim.stats()
    assert result.calls == 7 and result.answer == "final" and stats["max_in_flight"] == 3
    layer1, layer2, final = received[:3], received[3:6], received[6]
    assert all(r["body"]["messages"][0]["role"] == "user" for r in layer1)
    for r in layer2:
        system = r["body"]["messages"][0]
        assert system["role"] == "system"
        assert "1. p-layer1\n2. q-layer1\n3. r-layer1" in system["content"]
    assert "1. p-layer2\n2. q-layer2\n3. r-layer2" in final["body"]["messages"][0]["content"]
    assert [layer["proposers"] for layer in result.details["layers"]] == [["p", "q", "r"]] * 2


async def test_references_are_appended_to_an_existing_system_message() -> None:
    async with SimServer(SimConfig(rules=[Rule(replies=["ok"])], latency=Latency(fixed=0))) as sim:
        messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]
        await run(
            mixture_of_agents(proposers(sim.spec(), "p"), Agent("agg", sim.spec()), layers=2),
            messages,
        )
        final = (await sim.requests())[-1]["body"]["messages"]
    assert final[0]["content"].startswith("Be kind.\n\n") and "1. ok" in final[0]["content"]
    assert [m["role"] for m in final] == ["system", "user"]


async def test_a_failed_proposer_is_dropped_and_reported() -> None:
    async with SimServer(
        SimConfig(rules=[Rule(replies=["fine"])], latency=Latency(fixed=0))
    ) as sim:
        dead = ModelSpec("hosted_vllm/x", api_base="http://127.0.0.1:9/v1", timeout=2)
        team = [Agent("p", sim.spec()), Agent("broken", dead)]
        result = await run(mixture_of_agents(team, Agent("agg", sim.spec()), layers=2), "q")
        final = (await sim.requests())[-1]["body"]["messages"][0]["content"]
    assert [d["agent"] for d in result.details["dropped"]] == ["broken"]
    assert "1. fine" in final and "2." not in final


async def test_sparse_judge_keeps_top_k_and_stops_early() -> None:
    rules = [Rule(agent=n, replies=[f"{n}-says"]) for n in "pqr"] + [
        Rule(
            agent="judge", replies=['{"reasoning": "r and p agree", "chosen": [2, 0], "end": true}']
        ),
        Rule(agent="agg", replies=["final"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec()
        graph = mixture_of_agents(
            proposers(spec), Agent("agg", spec), layers=3, judge=Agent("judge", spec), k=2
        )
        result = await run(graph, "q")
        received = await sim.requests()
    assert [r["agent"] for r in received] == [
        "p",
        "q",
        "r",
        "judge",
        "agg",
    ]  # stopped after layer 1
    assert "Response 0.\np-says" in received[3]["body"]["messages"][-1]["content"]
    assert "1. r-says\n2. p-says" in received[4]["body"]["messages"][0]["content"]
    assert result.details["layers"][0]["kept"] == ["r", "p"] and result.details["layers"][0]["end"]


async def test_sparse_unusable_verdict_keeps_the_first_k_and_says_so() -> None:
    rules = [Rule(agent=n, replies=[f"{n}-says"]) for n in "pqr"] + [
        Rule(agent="judge", replies=["I like them all"])
    ]
    async with SimServer(
        SimConfig(rules=[*rules, Rule(replies=["x"])], latency=Latency(fixed=0))
    ) as sim:
        spec = sim.spec()
        result = await run(mixture_of_agents(proposers(spec), Agent("agg", spec), layers=2,
                                             judge=Agent("judge", spec), k=2), "q")  # fmt: skip
    layer = result.details["layers"][0]
    assert layer["kept"] == ["p", "q"] and layer["verdict"].startswith("unusable verdict")


async def test_a_proposer_can_be_a_debate() -> None:
    async with SimServer(SimConfig(seed=3, latency=Latency(fixed=0))) as sim:
        spec = sim.spec()
        inner = as_agent(debate([Agent("d1", spec), Agent("d2", spec)], rounds=2), "panel")
        result = await run(
            mixture_of_agents([inner, Agent("solo", spec)], Agent("agg", spec), layers=2),
            "What is 6 * 7?",
        )
        agents = [r["agent"] for r in await sim.requests()]
    assert agents.count("d1") == 2 and agents.count("d2") == 2 and agents[-1] == "agg"
    assert result.calls == 6 and result.details["layers"][0]["proposers"] == ["panel", "solo"]


async def test_an_error_other_than_a_model_error_cancels_the_layer(settled) -> None:
    """A failed model call drops its proposer (above); anything else, here the budget
    refusing the third call, ends the layer at once: the other two requests are
    cancelled instead of running to the end."""
    async with SimServer(SimConfig(latency=Latency(fixed=5.0))) as sim:
        with pytest.raises(BudgetExceeded):
            await run(mixture_of_agents(proposers(sim.spec()), Agent("agg", sim.spec()), layers=2), "q",
                      budget=Budget(max_calls=2))  # fmt: skip
        stats = await settled(sim)
    assert stats["completed"] == 0
