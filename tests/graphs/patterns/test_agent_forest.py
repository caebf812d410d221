"""Agent forest over real HTTP: N samples all in flight at once, the majority vote of
extracted answers, and the similarity rule (the medoid by sentence BLEU) on free text."""

from __future__ import annotations

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import agent_forest
from concilium.graphs.patterns._agent_forest import bleu_similarity, most_similar
from concilium.serving import SimServer


async def test_n_agents_are_n_requests_in_flight_together_then_a_majority_vote() -> None:
    replies = ["\\boxed{7}", "\\boxed{8}", "\\boxed{7}", "\\boxed{9}", "\\boxed{7}", "\\boxed{8}"]
    config = SimConfig(rules=[Rule(agent="s", replies=replies)], latency=Latency(fixed=0.3))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        result = await run(agent_forest(Agent("s", spec), agents=6), "q")
        stats = await sim.stats()
    assert stats["requests"] == 6 and stats["max_in_flight"] == 6
    assert result.details == {"agents": 6, "requests": 6, "vote": "majority"}
    assert result.votes is not None and result.votes["counts"] == {"7": 3, "8": 2, "9": 1}
    assert result.answer == "7"


async def test_with_n_the_samples_go_in_requests_of_per_request() -> None:
    config = SimConfig(rules=[Rule(agent="s", replies=["\\boxed{4}"])], latency=Latency(fixed=0))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=True))
        result = await run(agent_forest(Agent("s", spec), agents=16, per_request=10), "q")
        received = await sim.requests()
    assert sorted(r["body"].get("n", 1) for r in received) == [6, 10]
    assert len(result.transcript) == 16 and result.answer == "4"


async def test_free_text_is_decided_by_the_answer_most_similar_to_the_others() -> None:
    texts = [
        "def add(a, b): return a + b",
        "def add(a, b): return b + a",
        "def add(x, y): return x - y",
        "def add(a, b): return a + b  # sum",
    ]
    expected, scores = most_similar(texts)  # by hand: the pairwise sums
    by_hand = [sum(bleu_similarity(a, b) for b in texts if b is not a) for a in texts]
    assert [round(s, 4) for s in scores] == [round(s, 4) for s in by_hand]
    assert expected == by_hand.index(max(by_hand)) == 0
    config = SimConfig(rules=[Rule(agent="s", replies=texts)], latency=Latency(fixed=0))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        result = await run(agent_forest(Agent("s", spec), agents=4, answer="text"), "q")
    assert result.votes is not None
    assert result.details["vote"] == "similarity"
    drawn = [e["text"] for e in result.transcript]  # arrival order may differ from texts
    winner = int(result.votes["winner"])
    assert sorted(drawn) == sorted(texts) and drawn[winner] == texts[0]
    assert result.details["similarity"] == most_similar(drawn)[1]


def test_bleu_similarity_rewards_shared_ngrams() -> None:
    assert bleu_similarity("a b c d", "a b c d") == 1.0
    assert bleu_similarity("a b c d", "a b x d") < bleu_similarity("a b c d", "a b c x") < 1.0
    assert bleu_similarity("x y", "a b") == 0.0
