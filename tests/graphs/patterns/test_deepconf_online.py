"""DeepConf online over real HTTP against the simulated server (a test double whose
per-token confidence model makes wrong traces less confident): the warm-up sets the
threshold, streamed traces are aborted when a window falls below it (the server sees
them cancelled), every aborted trace stays in the transcript with its tokens counted,
and sampling stops at consensus."""

from __future__ import annotations

import pytest

from concilium._errors import GraphError
from concilium.agents import Agent, FakeModel
from concilium.agents.sim import Latency, SimConfig, Statistical, TokenConfidence
from concilium.graphs import RunResult, run
from concilium.graphs.kit import deepconf_threshold
from concilium.graphs.patterns import deepconf_online
from concilium.serving import SimServer

TEMPLATE = "[simulated reply] " + "step " * 60 + "so the answer is \\boxed{{{answer}}}."
LENGTH = len(TEMPLATE.split())  # the words (tokens) of a whole trace


def config(separation: float = 1.5, accuracy: float = 0.5) -> SimConfig:
    stat = Statistical(
        accuracy=accuracy,
        wrong=["80", "81"],
        template=TEMPLATE,
        confidence=TokenConfidence(separation=separation),
    )
    return SimConfig(seed=4, statistical=stat, latency=Latency(ttft=0.005, per_token=0.002))


async def online(sim: SimServer, **options: object) -> RunResult:
    settings = {"warmup": 16, "budget": 48, "window": 8, "top_logprobs": 5, "parallel": 4}
    graph = deepconf_online(Agent("s", sim.spec()), **{**settings, **options})
    return await run(graph, "What is 12 * 7?")


async def test_streamed_traces_below_the_warm_up_threshold_are_aborted_and_counted() -> None:
    async with SimServer(config(), process=True) as sim:
        result = await online(sim, consensus=1.0)  # never settles: the budget is spent
        stats = await sim.stats()
    entries = result.transcript
    warm = [e for e in entries if e.get("step") == "warmup"]
    streamed = [e for e in entries if e.get("step") == "online"]
    assert len(warm) == 16 and len(streamed) == 32 and result.details["stopped_by"] == "budget"
    # keep top10: the threshold is the 90th percentile of the warm-up's lowest groups
    threshold = deepconf_threshold([e.get("confidence", 0.0) for e in warm], 10)
    assert result.details["threshold"] == pytest.approx(threshold)
    aborted = [e for e in streamed if e.get("stopped") == "below_threshold"]
    assert len(aborted) == result.details["aborted"]["below_threshold"] >= 8
    for entry in aborted:  # cut the moment a whole window fell below it, not before
        curve = entry.get("curve", [])
        assert len(curve) == entry.get("sample_tokens") == entry["completion_tokens"] < LENGTH
        assert curve[-1] < threshold and all(c >= threshold for c in curve[7:-1])
        assert entry["answer"] is None and not entry.get("kept")
    # every token the server sent is counted, aborted traces' included
    assert result.usage.completion_tokens == sum(e["completion_tokens"] for e in entries)
    assert result.details["generated_tokens"] < 48 * LENGTH
    assert stats["requests"] == 48 and stats["cancelled"] == len(aborted)
    assert stats["completed"] == 48 - len(aborted)
    # the vote: every finished trace, each weighted by its lowest group
    assert [e.get("kept") for e in entries] == [e.get("stopped") == "complete" for e in entries]
    assert result.answer == "84"


async def test_sampling_stops_at_consensus_and_the_traces_in_flight_are_aborted() -> None:
    async with SimServer(config(accuracy=0.8)) as sim:
        result = await online(sim, budget=400, keep="top90")
    details = result.details
    assert details["stopped_by"] == "consensus" and details["traces"] < 400
    assert details["agreement"] >= 0.95 and result.answer == "84"
    # nothing but the traces in flight at the stop may end "consensus", each counted
    late = [e for e in result.transcript if e.get("stopped") == "consensus"]
    assert len(late) <= 4 and all(e["completion_tokens"] == e.get("sample_tokens") for e in late)


async def test_keep_top90_sets_a_lower_threshold_and_aborts_fewer_than_top10() -> None:
    async with SimServer(config()) as sim:
        low = await online(sim, consensus=1.0, keep="top10")
        await sim.reset()
        high = await online(sim, consensus=1.0, keep="top90")
    assert high.details["threshold"] < low.details["threshold"]
    assert high.details["aborted"]["below_threshold"] < low.details["aborted"]["below_threshold"]


async def test_without_top_logprobs_the_error_says_what_the_server_must_return() -> None:
    with pytest.raises(GraphError, match="without top logprobs"):
        await run(deepconf_online(Agent("s", FakeModel({"s": "\\boxed{7}"}).spec()), warmup=2), "?")


def test_bad_settings_name_the_value_and_the_fix() -> None:
    agent = Agent("s", FakeModel().spec())
    with pytest.raises(GraphError, match="'top50' is not 'top10'"):
        deepconf_online(agent, keep="top50")
    with pytest.raises(GraphError, match="budget >= warmup"):
        deepconf_online(agent, warmup=16, budget=8)
