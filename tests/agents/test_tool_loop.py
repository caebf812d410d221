"""Ordinary tool calling over real HTTP: several calls of one turn run concurrently and
their results go back in call order."""

from __future__ import annotations

import asyncio
import json

import pytest

from concilium._errors import ModelError
from concilium.agents import Agent, run_with_tools
from concilium.serving import Latency, Rule, SimConfig, SimServer
from concilium.tools import Tool, ToolRegistry


def calls(*pairs: tuple[str, dict]) -> str:
    return "TOOL_CALLS:" + json.dumps([{"name": n, "arguments": a} for n, a in pairs])


async def test_one_turns_calls_run_together_and_answer_in_call_order() -> None:
    active = 0
    most = 0

    async def fetch(name: str, delay: float) -> str:
        "Fetch something slowly."
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(delay)
        active -= 1
        return f"{name}-data"

    tools = ToolRegistry([Tool.from_function(fetch)])
    turn = calls(("fetch", {"name": "slow", "delay": 0.2}), ("fetch", {"name": "fast", "delay": 0.01}), ("fetch", {"name": 3}))
    rules = [Rule(agent="a", replies=[turn, "done"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        out = await run_with_tools(Agent("a", sim.spec()), "go", tools)
        second = (await sim.requests())[1]["body"]
    assert most == 2 and out.reply.text == "done"
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages[:2]] == ["slow-data", "fast-data"]
    assert tool_messages[2]["content"].startswith("error: bad arguments for fetch")
    assert second["tools"][0]["function"]["name"] == "fetch"
    assert [m["tool_call_id"] for m in tool_messages] == [c["id"] for c in second["messages"][1]["tool_calls"]]


async def test_a_model_that_never_stops_calling_tools_is_an_error() -> None:
    tools = ToolRegistry([Tool.from_function(lambda: "x", name="ping", description="Ping.")])
    rules = [Rule(agent="a", replies=[calls(("ping", {}))])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        with pytest.raises(ModelError, match="still asked for tools after 3 turns"):
            await run_with_tools(Agent("a", sim.spec()), "go", tools, max_turns=3)
