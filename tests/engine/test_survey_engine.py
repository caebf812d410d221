"""Survey patterns on the real engine (Gemma 3 270M base, issue 15): LeaP, Graph of
Thoughts and agent forest each run once with real tokens. The assertions are about
structure (calls, tokens, the pattern's shape: exchanges, waves, samples), never about
accuracy: a 270M base model sorts and answers poorly.

Budgets are small (a few tokens per call) so the three together stay well under three
minutes on two CPU cores. Graph of Thoughts and agent forest ask one user message per
call, so they run as a base model should, in completion mode over /v1/completions;
LeaP continues a conversation (segment, summary request, peers' comments), which
completion mode's ``Q: ... A:`` frame would drop, so it runs over chat.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from concilium.agents import Agent, Capabilities, ModelSpec
from concilium.graphs import Event, run
from concilium.graphs.patterns import Operation, agent_forest, graph_of_thoughts, leap
from concilium.prompts import PromptLibrary

pytestmark = pytest.mark.asyncio(loop_scope="session")

# a loaded 2-core CPU can take long per batch; the bounds only stop a hung server
SLOW = {"timeout": 300.0, "ttft_timeout": 300.0}


def completion_spec(engine: Any) -> ModelSpec:
    caps = Capabilities(n=True, logprobs=True, mode="completion")
    return replace(engine.spec(**SLOW), capabilities=caps)


def order(events: list[Event], kind: str, key_part: str) -> list[int]:
    """Positions of the ``kind`` events of calls whose key contains ``key_part``."""
    return [i for i, e in enumerate(events)
            if e["type"] == kind and key_part in str(e.get("key", ""))]  # fmt: skip


async def test_leap_paths_exchange_summaries_on_the_engine(engine: Any) -> None:
    agent = Agent("leap", engine.spec(**SLOW), temperature=0.8, seed=7)
    graph = leap(agent, paths=2, tokens=12, summary_tokens=8, exchanges=1, routing="all")
    result = await run(graph, "What is 17 + 25? Think step by step.")

    segments = [e for e in result.transcript if e.get("step") == "segment"]
    summaries = [e for e in result.transcript if e.get("step") == "summary"]
    finished_first = [p for p, at in enumerate(result.details["finished_at"]) if at == 1]
    active = [p for p in range(2) if p not in finished_first]
    # every path wrote a first segment; each path still running summarized once,
    # then wrote a second segment shown its peers' summaries
    assert sorted(e.get("sample", -1) for e in segments if e.get("round") == 1) == [0, 1]
    assert sorted(e.get("sample", -1) for e in summaries) == active
    assert sorted(e.get("sample", -1) for e in segments if e.get("round") == 2) == active
    if len(active) == 2:
        (exchange,) = result.details["exchanges"]
        assert exchange["peers"] == {"0": [1], "1": [0]}
        for e in segments:
            if e.get("round") == 2:
                peer = str(1 - e.get("sample", -1))
                assert exchange["summaries"][peer] in e["prompt"]
    assert result.calls == len(result.transcript) > 0
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert all(e["completion_tokens"] > 0 for e in segments)
    assert len(result.details["answers"]) == 2


async def test_graph_of_thoughts_runs_its_operations_in_waves_on_the_engine(engine: Any) -> None:
    agent = Agent("got", completion_spec(engine), temperature=0.7, max_tokens=24, seed=3)
    ops = [
        Operation(id="split", op="split", k=2),
        Operation(id="sort1", op="generate", inputs=["split"], part=1, k=2, prompt="graph_of_thoughts/sort"),
        Operation(id="sort2", op="generate", inputs=["split"], part=2, k=2, prompt="graph_of_thoughts/sort"),
        Operation(id="score1", op="score", inputs=["sort1"]),
        Operation(id="score2", op="score", inputs=["sort2"]),
        Operation(id="best1", op="keep_best", inputs=["score1"]),
        Operation(id="best2", op="keep_best", inputs=["score2"]),
        Operation(id="merge", op="aggregate", inputs=["best1", "best2"], k=2, prompt="graph_of_thoughts/merge"),
        Operation(id="score_merge", op="score", inputs=["merge"]),
        Operation(id="final", op="keep_best", inputs=["score_merge"]),
    ]  # fmt: skip
    events: list[Event] = []
    result = await run(
        graph_of_thoughts(agent, ops), "[5, 1, 9, 3, 7, 0, 2, 8]", on_event=events.append
    )

    by_op = {o["id"]: o for o in result.details["operations"]}
    # one request (n=2) per generate / aggregate; the two halves' sorts in one wave, in flight together
    assert result.calls == 3 and [e.get("step") for e in result.transcript] == [
        "sort1",
        "sort2",
        "merge",
    ]
    assert by_op["sort1"]["wave"] == by_op["sort2"]["wave"] < by_op["merge"]["wave"]
    started, ended = order(events, "call_started", "/sort"), order(events, "call_finished", "/sort")
    assert len(started) == len(ended) == 2 and max(started) < min(ended)
    # mechanical scores for every sample (300 marks a reply with no list), best kept
    assert [by_op[i]["thoughts"] for i in ("sort1", "score1", "best1", "merge", "final")] == [
        2,
        2,
        1,
        2,
        1,
    ]
    assert all(isinstance(s, float) for s in by_op["score_merge"]["scores"])
    assert result.details["errors"] >= 0 and isinstance(result.answer, str)
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


async def test_agent_forest_samples_in_concurrent_requests_on_the_engine(engine: Any) -> None:
    lib = PromptLibrary()

    def few_shot(messages: Any) -> str:
        return lib.render("completion/capitals", question=messages[-1]["content"])

    agent = Agent(
        "forest", completion_spec(engine), prompt=few_shot, temperature=0.8, max_tokens=8, seed=11
    )
    graph = agent_forest(
        agent, agents=4, per_request=2, answer="text", prompt="completion/question"
    )
    events: list[Event] = []
    result = await run(graph, "What is the capital of France?", on_event=events.append)

    # 4 agents as 2 requests of n=2, both in flight together; free text: similarity vote
    assert result.calls == 2 and result.details["requests"] == 2 and result.details["agents"] == 4
    started, ended = (
        order(events, "call_started", "forest"),
        order(events, "call_finished", "forest"),
    )
    assert len(started) == len(ended) == 2 and max(started) < min(ended)
    assert result.details["vote"] == "similarity" and len(result.details["similarity"]) == 4
    assert sorted(e.get("sample", -1) for e in result.transcript) == [0, 1, 2, 3]
    # a request's tokens are counted once, on its first sample
    assert [e["completion_tokens"] > 0 for e in result.transcript] == [True, False, True, False]
    winners = [e["text"] if e["answer"] is None else e["answer"] for e in result.transcript]
    assert result.usage.completion_tokens > 0 and result.answer in winners
