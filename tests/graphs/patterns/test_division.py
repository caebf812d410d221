"""Manager/worker, Chain-of-Agents and synthesis over real HTTP to the simulated server."""

from __future__ import annotations

import json

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import as_agent, run
from concilium.graphs.patterns import chain_of_agents, manager_worker, self_consistency, synthesis
from concilium.graphs.patterns._manager_worker import chunk_sentences
from concilium.serving import SimServer

PLAN = json.dumps({"subtasks": [{"task": "price of A", "worker": "w2"}, {"task": "price of B", "worker": "nobody"},
                                {"task": "price of C", "worker": ""}]})  # fmt: skip


async def test_the_plan_fans_out_to_concurrent_workers_and_the_manager_combines_in_order() -> None:
    rules = [Rule(agent="boss", replies=[PLAN, "A, B and C together: \\boxed{60}"]),
             Rule(agent="w1", match="price of (B|C)", replies=["found 20"]),
             Rule(agent="w2", match="price of A", replies=["found 10"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.1)), process=True) as sim:
        spec = sim.spec(capabilities=Capabilities(structured_output=True))
        team = [Agent("w1", spec), Agent("w2", spec)]
        result = await run(
            manager_worker(Agent("boss", spec), team, answer="boxed"), "Total price?"
        )
        received = await sim.requests()
        stats = await sim.stats()
    assert [a["worker"] for a in result.details["assignments"]] == [
        "w2",
        "w2",
        "w1",
    ]  # named, else in turn
    assert received[0]["body"]["response_format"]["json_schema"]["name"] == "Plan"
    assert stats["max_in_flight"] == 3 and result.calls == 5 and result.answer == "60"
    synthesis_prompt = received[-1]["body"]["messages"][-1]["content"]
    assert (
        synthesis_prompt.index('"price of A"')
        < synthesis_prompt.index('"price of B"')
        < synthesis_prompt.index('"price of C"')
    )


async def test_a_worker_can_be_a_self_consistency_ensemble() -> None:
    plan = json.dumps({"subtasks": [{"task": "What is 2 + 2?"}, {"task": "What is 3 + 3?"}]})
    rules = [Rule(agent="boss", replies=[plan, "done"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        ensemble = as_agent(self_consistency(Agent("sampler", sim.spec()), samples=3), "ensemble")
        result = await run(manager_worker(Agent("boss", sim.spec()), [ensemble]), "Add things.")
        sampled = [r for r in await sim.requests() if r["agent"] == "sampler"]
    assert len(sampled) == 2 and all(r["body"]["n"] == 3 for r in sampled)
    assert result.answer == "done"


def test_chunks_keep_every_sentence_and_respect_the_budget() -> None:
    text = " ".join(f"Sentence {i} has five words." for i in range(10))
    chunks = chunk_sentences(text, 12)
    assert (
        " ".join(chunks) == text and all(len(c.split()) <= 12 for c in chunks) and len(chunks) == 5
    )


async def test_chain_workers_run_in_order_passing_the_summary_and_the_manager_sees_only_the_last() -> (
    None
):
    source = " ".join(f"Fact number {i} is here." for i in range(6))
    rules = [
        Rule(agent="w", replies=["summary-1", "summary-2", "summary-3"]),
        Rule(agent="m", replies=["the answer"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.05)), process=True) as sim:
        result = await run(chain_of_agents(Agent("w", sim.spec()), Agent("m", sim.spec()), chunk_words=10),
                           source + "\nQuestion: which facts?")  # fmt: skip
        received = [r["body"]["messages"][-1]["content"] for r in await sim.requests()]
        stats = await sim.stats()
    assert result.details["chunks"] == 3 and stats["max_in_flight"] == 1
    assert (
        "previous source text: summary-1" in received[1]
        and "previous source text: summary-2" in received[2]
    )
    assert (
        "summary-3" in received[3]
        and "Fact number" not in received[3]
        and "which facts?" in received[3]
    )


async def test_synthesizer_reads_every_exploration() -> None:
    rules = [Rule(agent="small", replies=["try \\boxed{5}", "try \\boxed{6}", "try \\boxed{6}"]),
             Rule(agent="big", replies=["Having read them: \\boxed{6}"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(
            synthesis(Agent("small", sim.spec()), Agent("big", sim.spec()), samples=3), "q"
        )
        received = await sim.requests()
    assert len(received) == 2 and received[0]["body"]["n"] == 3
    prompt = received[1]["body"]["messages"][-1]["content"]
    assert all(f"Attempt {i}:\ntry" in prompt for i in (1, 2, 3))
    assert result.answer == "6" and result.details["explorer_votes"]["counts"] == {"5": 1, "6": 2}
