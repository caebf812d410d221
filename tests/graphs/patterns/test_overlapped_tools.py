"""Overlapped tool calls over real HTTP: a call the model writes starts while its
reply is still streaming, and the result is spliced back in for the next round; a
stream that fails cancels the calls it started."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from concilium import ModelCallError
from concilium.agents import Agent
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import overlapped_tools
from concilium.serving import SimServer
from concilium.tools import ToolRegistry

FIRST = (
    '[CALL] c1 [HEAD] lookup("lighthouse") [END] While that runs, I note the question asks '
    "for a year and the tower height is not needed for the answer at all here. [TRAP][END]"
)


async def test_the_tool_starts_before_the_stream_ends_and_its_result_comes_back() -> None:
    rules = [
        Rule(
            agent="a",
            match=r"\[INTR\] c1 \[HEAD\] lighthouse: built in 1874",
            replies=["\\boxed{1874}"],
        ),
        Rule(agent="a", replies=[FIRST]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=1.5))) as sim:
        in_flight_at_start: list[int] = []
        registry = ToolRegistry()

        @registry.tool
        async def lookup(topic: str) -> str:
            """Look a topic up."""
            stats = await sim.stats()  # is the model's streamed reply still open?
            in_flight_at_start.append(stats["in_flight"])
            return f"{topic}: built in 1874"

        graph = overlapped_tools(Agent("a", sim.spec()), registry)
        result = await run(graph, "When was the lighthouse built?")
        received = await sim.requests()
        stats = await sim.stats()
    assert in_flight_at_start == [1]  # the stream was still open when the tool ran
    (call,) = result.details["calls"]
    assert call["dispatched_at_char"] < call["stream_chars"]  # dispatched mid-stream
    assert len(received) == 2 and received[0]["body"]["stop"] == ["[TRAP][END]"]
    assert received[0]["body"].get("stream") and stats["requests"] == 2
    last = received[1]["body"]["messages"]
    assert last[-2]["role"] == "assistant" and last[-2]["content"].startswith("[CALL] c1")
    assert "[INTR] c1 [HEAD] lighthouse: built in 1874 [END]" in last[-1]["content"]
    assert result.answer == "1874" and result.details["rounds"] == 2


async def test_a_stream_that_fails_while_its_tool_runs_cancels_the_tool_and_leaves_no_task() -> (
    None
):
    words = " ".join(f"note{i}" for i in range(200))  # 10 s of decoding: the stream stays open
    rules = [Rule(agent="a", replies=[f'[CALL] c1 [HEAD] lookup("lighthouse") [END] {words} [TRAP][END]'])]  # fmt: skip
    config = SimConfig(rules=rules, latency=Latency(ttft=0.01, per_token=0.05))
    before = asyncio.all_tasks()
    running: list[asyncio.Task[Any]] = []
    seen: list[str] = []
    async with SimServer(config, process=True) as sim:
        registry = ToolRegistry()

        @registry.tool
        async def lookup(topic: str) -> str:
            """Look a topic up (slowly: until it is cancelled)."""
            task = asyncio.current_task()
            assert task is not None
            running.append(task)
            sim.kill()  # the server dies mid-stream: the stream fails while this runs
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            return "never"

        with pytest.raises(ModelCallError):
            await run(overlapped_tools(Agent("a", sim.spec()), registry), "When?")
        assert seen == ["cancelled"] and all(task.done() for task in running)
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not left, left  # nothing the pattern started is still pending
