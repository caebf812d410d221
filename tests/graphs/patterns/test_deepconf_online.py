"""DeepConf online over real HTTP against the simulated server (a test double whose
per-token confidence model makes wrong traces less confident): the warm-up sets the
threshold, streamed traces are aborted when a window falls below it (the server sees
them cancelled), every aborted trace stays in the transcript with its tokens counted,
and sampling stops at consensus."""

from __future__ import annotations

import asyncio

import pytest

from concilium._errors import GraphError
from concilium.agents import Agent, Capabilities, FakeModel, ModelSpec
from concilium.agents.sim import Latency, Rule, SimConfig, Statistical, TokenConfidence
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


async def settled(sim: SimServer) -> dict[str, int]:
    """The server's counters once it has noticed every closed request."""
    for _ in range(200):
        stats = await sim.stats()
        if stats["in_flight"] == 0:
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"requests still in flight: {stats}")


async def online(sim: SimServer, **options: object) -> RunResult:
    settings = {"warmup": 16, "budget": 48, "window": 8, "top_logprobs": 5, "parallel": 4}
    graph = deepconf_online(Agent("s", sim.spec(), seed=0), **{**settings, **options})
    return await run(graph, "What is 12 * 7?")


async def test_streamed_traces_below_the_warm_up_threshold_are_aborted_and_counted() -> None:
    async with SimServer(config(), process=True) as sim:
        # keep top90 with half the traces wrong: the vote never reaches 0.95, the budget is spent
        result = await online(sim, keep="top90", budget=96, parallel=8)
        stats = await settled(sim)
    entries = result.transcript
    warm = [e for e in entries if e.get("step") == "warmup"]
    streamed = [e for e in entries if e.get("step") == "online"]
    assert len(warm) == 16 and len(streamed) == 80 and result.details["stopped_by"] == "budget"
    # keep top90: the threshold is the 10th percentile of the warm-up's lowest groups
    threshold = deepconf_threshold([e.get("confidence", 0.0) for e in warm], 90)
    assert result.details["threshold"] == pytest.approx(threshold)
    aborted = [e for e in streamed if e.get("stopped") == "below_threshold"]
    assert len(aborted) == result.details["aborted"]["below_threshold"] >= 3
    for entry in aborted:  # cut the moment a whole window fell below it, not before
        curve = entry.get("curve", [])
        assert len(curve) == entry.get("sample_tokens") == entry["completion_tokens"] < LENGTH
        assert curve[-1] < threshold and all(c >= threshold for c in curve[7:-1])
        assert entry["answer"] is None and not entry.get("kept")
    # every token the server sent is counted, aborted traces' included
    assert result.usage.completion_tokens == sum(e["completion_tokens"] for e in entries)
    assert result.details["generated_tokens"] < 96 * LENGTH
    # the server saw aborted requests go (one cut at its last tokens may have been sent whole)
    assert stats["requests"] == stats["completed"] + stats["cancelled"] == 96
    assert 0 < stats["cancelled"] <= len(aborted)
    # the vote: the finished traces at or above the threshold, weighted by their lowest group
    voting = [
        e.get("stopped") == "complete" and e.get("confidence", 0.0) >= threshold for e in entries
    ]
    assert [e.get("kept") for e in entries] == voting and result.details["voters"] == sum(voting)
    assert result.answer == "84"


async def test_sampling_stops_at_consensus_and_the_traces_in_flight_are_aborted() -> None:
    right, wrong = "so the answer is \\boxed{84}", "so the answer is \\boxed{80}"
    long = "step " * 1500 + right  # still streaming when the short ones settle the vote
    exact = TokenConfidence(separation=1.5, trace_spread=0.0, token_spread=0.0)  # 3.0 and 1.5
    config = SimConfig(
        rules=[Rule(agent="s", replies=[right, wrong, wrong, wrong, long, long, long, right])],
        statistical=Statistical(confidence=exact),
        latency=Latency(ttft=0.005, per_token=0.005),
        max_tokens=4000,
    )
    async with SimServer(config, process=True) as sim:
        # warm-up 3 wrong (1.5 each) and 1 right (3.0): all vote at the 10th percentile (1.5)
        result = await online(sim, warmup=4, budget=200, keep="top90", consensus=0.8)
        stats = await settled(sim)
    details = result.details
    assert details["stopped_by"] == "consensus" and result.answer == "84"
    # 4.5 of wrong weight: 0.8 needs 18 of right, 6 right traces (3.0 each), 5 of them online
    assert details["voters"] == 9 and details["traces"] == 4 + 3 + 5
    late = [e for e in result.transcript if e.get("stopped") == "consensus"]
    assert len(late) == details["aborted"]["consensus"] == 3
    for entry in late:  # cut at their next token, and their tokens counted
        tokens = entry.get("sample_tokens") or 0
        assert 0 < entry["completion_tokens"] == tokens < 1500
        assert entry["answer"] is None and not entry.get("kept")
    assert stats["cancelled"] == 3
    assert result.usage.completion_tokens == sum(e["completion_tokens"] for e in result.transcript)


async def test_keep_top10_is_the_aggressive_setting_and_top90_the_conservative_one() -> None:
    async with SimServer(config()) as sim:
        low = await online(sim, keep="top10")
        await sim.reset()
        high = await online(sim, keep="top90")
    # the same warm-up (seeded): top10's threshold is its 90th percentile, top90's its 10th
    warm = [e.get("confidence", 0.0) for e in low.transcript[:16]]
    assert low.details["threshold"] == pytest.approx(deepconf_threshold(warm, 10))
    assert high.details["threshold"] == pytest.approx(deepconf_threshold(warm, 90))
    assert high.details["threshold"] < low.details["threshold"]
    # top10 lets only the warm-up's two most confident vote: they agree, and it stops there
    assert low.details["voters"] == 2 and low.details["traces"] == 16 and low.answer == "84"
    assert high.details["voters"] > 2


async def test_without_top_logprobs_the_error_says_what_the_server_must_return() -> None:
    with pytest.raises(GraphError, match="without top logprobs"):
        await run(deepconf_online(Agent("s", FakeModel({"s": "\\boxed{7}"}).spec()), warmup=2), "?")


def test_bad_settings_name_the_value_and_the_fix() -> None:
    agent = Agent("s", FakeModel().spec())
    with pytest.raises(GraphError, match="'top50' is not 'top10'"):
        deepconf_online(agent, keep="top50")
    with pytest.raises(GraphError, match="budget >= warmup"):
        deepconf_online(agent, warmup=16, budget=8)


async def test_a_completion_mode_model_streams_its_tokens_and_is_cut_the_same_way() -> None:
    # a base model over /v1/completions: its stream's legacy logprobs reach the watcher
    async with SimServer(config(), process=True) as sim:
        spec = ModelSpec("hosted_vllm/concilium-sim", api_base=sim.url,
                         capabilities=Capabilities(mode="completion", n=False))  # fmt: skip
        graph = deepconf_online(Agent("s", spec, seed=0, max_tokens=128), warmup=8, budget=24,
                                keep="top90", window=8, top_logprobs=5, parallel=4)  # fmt: skip
        result = await run(graph, "What is 12 * 7?")
        endpoints = {r["endpoint"] for r in await sim.requests()}
    assert all("chat" not in e for e in endpoints), endpoints
    streamed = [e for e in result.transcript if e.get("step") == "online"]
    assert streamed and all(len(e.get("curve", [])) == e["sample_tokens"] > 0 for e in streamed)
    assert result.details["aborted"]["below_threshold"] >= 1
    assert result.usage.completion_tokens == sum(e["completion_tokens"] for e in result.transcript)


async def test_a_prompt_template_wraps_the_question_as_given() -> None:
    config = SimConfig(seed=1, rules=[Rule(agent="s", replies=["\\boxed{7} " + "x " * 8])],
                       latency=Latency(ttft=0, per_token=0))  # fmt: skip
    async with SimServer(config) as sim:
        graph = deepconf_online(Agent("s", sim.spec()), warmup=2, budget=2, window=4,
                                top_logprobs=2, prompt="completion/question")  # fmt: skip
        await run(graph, "What is 3 + 4?")
        bodies = [r["body"] for r in await sim.requests()]
    assert [b["messages"][-1]["content"] for b in bodies] == ["What is 3 + 4?"] * 2
