"""Self-consistency over real HTTP to the simulated server."""

from __future__ import annotations

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving import SimServer


async def test_n_capable_model_gets_one_request_with_n(sim) -> None:
    result = await run(
        self_consistency(Agent("s", sim.spec(), temperature=1.0), samples=8), "What is 6 * 7?"
    )
    received = await sim.requests()
    assert len(received) == 1 and received[0]["body"]["n"] == 8
    assert len(result.transcript) == 8 and result.calls == 1
    assert sum(result.votes["counts"].values()) + result.votes["abstained"] == 8


async def test_without_n_support_samples_are_concurrent_requests() -> None:
    async with SimServer(SimConfig(latency=Latency(fixed=0.2)), process=True) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        result = await run(
            self_consistency(Agent("s", spec, seed=100), samples=6), "What is 6 * 7?"
        )
        received = await sim.requests()
        stats = await sim.stats()
    assert len(received) == 6 and stats["max_in_flight"] == 6
    assert sorted(r["body"]["seed"] for r in received) == list(range(100, 106))
    assert result.calls == 6


async def test_majority_of_scripted_samples() -> None:
    rules = [
        Rule(
            agent="s",
            replies=["\\boxed{1}", "\\boxed{2}", "\\boxed{2}", "no answer here", "\\boxed{1}"],
        )
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(self_consistency(Agent("s", sim.spec()), samples=5), "q")
    assert result.votes == {
        "winner": "1",
        "counts": {"1": 2, "2": 2},
        "abstained": 1,
        "agreement": 0.5,
    }
    assert result.answer == "1"  # tie: first seen
