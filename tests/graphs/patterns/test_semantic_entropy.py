"""Semantic-entropy stopping over real HTTP: the stop round is the first whose
entropy falls below the threshold, and the judge is asked exactly the pairs it must be."""

from __future__ import annotations

import math
from collections import Counter

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import semantic_entropy
from concilium.graphs.patterns._semantic_entropy import cluster_entropy
from concilium.serving import SimServer


def entropy(answers: str) -> float:
    n = len(answers)
    return -sum(c / n * math.log(c / n) for c in Counter(answers).values())


def test_entropy_is_the_natural_log_entropy_of_cluster_shares() -> None:
    assert cluster_entropy([0, 1, 0, 0]) == entropy("ABAA")
    assert cluster_entropy([5, 5, 5]) == 0.0


async def test_sampling_stops_at_the_first_round_below_the_threshold() -> None:
    stream = "ABABAAAAAAAAAAAA"  # per_round 2: entropies 0.69, 0.69, 0.64, 0.56, 0.50, 0.45, ...
    expected_rounds = next(
        r for r in range(1, 9) if entropy(stream[: 2 * r]) < 0.48
    )  # computed here, independently of the pattern
    replies = [f"\\boxed{{{c}}}" for c in stream]
    config = SimConfig(rules=[Rule(agent="s", replies=replies)], latency=Latency(fixed=0))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        graph = semantic_entropy(Agent("s", spec), max_samples=16, per_round=2, threshold=0.48)
        result = await run(graph, "q")
        requests = len(await sim.requests())
    details = result.details
    assert expected_rounds == 6
    assert details["samples_used"] == requests == 2 * expected_rounds
    assert all(e >= 0.48 for e in details["entropies"][:-1]) and details["entropies"][-1] < 0.48
    assert details["stopped_by_rule"] and result.answer == "A"


async def test_the_judge_is_asked_both_directions_against_each_cluster_head() -> None:
    same = r"Possible Answer 1: (Paris is the capital|The capital is Paris)\.\s+Possible Answer 2: (Paris is the capital|The capital is Paris)\."
    rules = [
        Rule(agent="s", replies=["Paris is the capital.", "The capital is Paris.", "It is Lyon."]),
        Rule(agent="j", match=same, replies=["entailment"]),
        Rule(agent="j", replies=["neutral"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        graph = semantic_entropy(
            Agent("s", spec), Agent("j", spec), max_samples=3, per_round=3, threshold=0.1
        )
        result = await run(graph, "What is the capital of France?")
        judge_calls = [r for r in await sim.requests() if r.get("agent") == "j"]
    details = result.details
    # sample 1 joins sample 0's cluster; sample 2 is compared with that cluster's head only
    assert details["clusters"] == [0, 0, 1]
    assert details["judged_pairs"] == [(0, 1), (0, 2)]
    assert len(judge_calls) == 4  # each pair, both directions
    assert details["entropies"] == [round(cluster_entropy([0, 0, 1]), 4)]
    assert not details["stopped_by_rule"]
    assert result.answer == "Paris is the capital."
