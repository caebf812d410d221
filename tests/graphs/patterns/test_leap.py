"""LeaP over real HTTP: each path's second segment is prompted with its routed peers'
summaries, the paths' segments run concurrently as streams cut at T tokens, and the
answers from the paths' own text are voted."""

from __future__ import annotations

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import leap
from concilium.graphs.patterns._leap import route
from concilium.serving import SimServer

SUMMARIES = ["alpha beta gamma", "alpha beta delta", "omega psi chi", "omega psi phi"]


def jaccard(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y)


def rules(finals: list[str]) -> list[Rule]:
    return [
        Rule(agent="a", match="Stop reasoning now", replies=finals),
        Rule(agent="a", match="Pause here", replies=SUMMARIES),
        Rule(agent="a", replies=["step one two three four five six seven \\boxed{9}"]),
    ]


async def test_each_path_continues_with_its_least_similar_peer_and_the_vote() -> None:
    finals = ["\\boxed{7}", "\\boxed{7}", "\\boxed{8}", "\\boxed{7}"]
    config = SimConfig(rules=rules(finals), latency=Latency(fixed=0.2))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        graph = leap(Agent("a", spec), paths=4, tokens=5, summary_tokens=20, exchanges=1,
                     routing="dispersed", peer_top_k=1)  # fmt: skip
        result = await run(graph, "What is 3 + 4?")
        stats = await sim.stats()
        received = await sim.requests()
    (exchange,) = result.details["exchanges"]
    summaries = {int(i): s for i, s in exchange["summaries"].items()}
    assert sorted(summaries.values()) == sorted(SUMMARIES)
    for i, own in summaries.items():  # the least similar peer, computed here
        others = [j for j in summaries if j != i]
        expected = min(others, key=lambda j: (jaccard(own, summaries[j]), j))
        assert exchange["peers"][str(i)] == [expected]
        (second,) = [t for t in result.transcript
                     if t.get("step") == "segment" and t.get("sample") == i and t.get("round") == 2]  # fmt: skip
        assert f'Peer 1: "{summaries[expected]}"' in second["prompt"]
        assert all(summaries[j] not in second["prompt"] for j in others if j != expected)
    # what the server was sent: four second segments carrying exactly those comments
    sent = [r["body"]["messages"][-1]["content"] for r in received
            if r["body"]["messages"][-1]["role"] == "user"
            and r["body"]["messages"][-1]["content"].startswith("Comments from your peers")]  # fmt: skip
    seconds = [
        t["prompt"] for t in result.transcript if t.get("round") == 2 and t.get("step") == "segment"
    ]
    assert sorted(sent) == sorted(seconds) and len(sent) == 4
    segments = [r for r in received if r["body"].get("max_tokens") == 5]
    assert len(segments) == 8 and all(r["body"].get("stream") for r in segments)
    assert stats["max_in_flight"] == 4  # the four paths' calls of each phase together
    assert result.details["finished_at"] == [0, 0, 0, 0]  # all cut at T, so all asked to answer
    assert result.votes is not None and result.votes["counts"] == {"7": 3, "8": 1}
    assert result.answer == "7"


async def test_all_routing_shows_every_other_path() -> None:
    config = SimConfig(rules=rules(["\\boxed{7}"]), latency=Latency(fixed=0))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        graph = leap(Agent("a", spec), paths=3, tokens=5, exchanges=2, routing="all")
        result = await run(graph, "q")
    assert [e["exchange"] for e in result.details["exchanges"]] == [1, 2]
    for exchange in result.details["exchanges"]:
        assert exchange["peers"] == {"0": [1, 2], "1": [0, 2], "2": [0, 1]}
    third = [t for t in result.transcript if t.get("step") == "segment" and t.get("round") == 3]
    assert len(third) == 3 and all(t["prompt"].count("Peer ") == 2 for t in third)


def test_clustered_routing_picks_the_most_similar() -> None:
    summaries = dict(enumerate(SUMMARIES))
    assert route(summaries, "clustered", 1) == {0: [1], 1: [0], 2: [3], 3: [2]}
    assert route(summaries, "dispersed", -1)[0] == [1, 2, 3]


async def test_a_path_that_finishes_by_itself_leaves_the_pool() -> None:
    config = SimConfig(rules=[Rule(agent="a", replies=["so \\boxed{5}"])], latency=Latency(fixed=0))
    async with SimServer(config) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        result = await run(leap(Agent("a", spec), paths=3, tokens=50, exchanges=2), "q")
        received = await sim.requests()
    assert result.details["finished_at"] == [1, 1, 1] and result.details["exchanges"] == []
    assert len(received) == 3 and result.answer == "5"
