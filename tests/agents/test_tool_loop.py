"""Ordinary tool calling over real HTTP: several calls of one turn run concurrently and
their results go back in call order; every call goes through the ledger (recorded,
budgeted, traced)."""

from __future__ import annotations

import asyncio
import json

import pytest

from concilium._errors import BudgetExceeded, ModelError
from concilium.agents import Agent, Budget, run_with_tools
from concilium.agents.ledger import CallLedger, SqliteCallRecord, reset_ledger, use_ledger
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.serving import SimServer
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
    turn = calls(
        ("fetch", {"name": "slow", "delay": 0.2}),
        ("fetch", {"name": "fast", "delay": 0.01}),
        ("fetch", {"name": 3}),
    )
    rules = [Rule(agent="a", replies=[turn, "done"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        out = await run_with_tools(Agent("a", sim.spec()), "go", tools)
        second = (await sim.requests())[1]["body"]
    assert most == 2 and out.reply.text == "done"
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages[:2]] == ["slow-data", "fast-data"]
    assert tool_messages[2]["content"].startswith("error: bad arguments for fetch")
    assert second["tools"][0]["function"]["name"] == "fetch"
    assert [m["tool_call_id"] for m in tool_messages] == [
        c["id"] for c in second["messages"][1]["tool_calls"]
    ]


async def test_a_model_that_never_stops_calling_tools_is_an_error() -> None:
    tools = ToolRegistry([Tool.from_function(lambda: "x", name="ping", description="Ping.")])
    rules = [Rule(agent="a", replies=[calls(("ping", {}))])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        with pytest.raises(ModelError, match="still asked for tools after 3 turns"):
            await run_with_tools(Agent("a", sim.spec()), "go", tools, max_turns=3)


def counting_tools(made: list[str], finished: list[str] | None = None) -> ToolRegistry:
    async def fetch(name: str, delay: float = 0.0) -> str:
        "Fetch something (counts its calls)."
        made.append(name)
        await asyncio.sleep(delay)
        if finished is not None:
            finished.append(name)
        return f"{name}-data"

    def send(to: str) -> str:
        "A side effect: send a message (counts its calls)."
        made.append(f"send {to}")
        return f"sent to {to}"

    return ToolRegistry([Tool.from_function(fetch), Tool.from_function(send, side_effects=True)])


async def test_a_resumed_run_repeats_no_tool_call(tmp_path) -> None:
    made: list[str] = []
    tools = counting_tools(made)
    rules = [
        Rule(agent="a", replies=[calls(("fetch", {"name": "x"}), ("fetch", {"name": "y"})), "done"])
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        record = SqliteCallRecord(tmp_path / "calls.db")
        # the second model call is over budget
        token = use_ledger(CallLedger(record=record, budget=Budget(max_calls=1)))
        try:
            with pytest.raises(BudgetExceeded):
                await run_with_tools(Agent("a", sim.spec()), "go", tools, key="job")
        finally:
            reset_ledger(token)
            record.close()
        assert sorted(made) == ["x", "y"]
        # resume: a new ledger over the same record
        record = SqliteCallRecord(tmp_path / "calls.db")
        ledger = CallLedger(record=record)
        token = use_ledger(ledger)
        try:
            out = await run_with_tools(Agent("a", sim.spec()), "go", tools, key="job")
        finally:
            reset_ledger(token)
            record.close()
    assert out.reply.text == "done" and [c["result"] for c in out.calls] == ["x-data", "y-data"]
    assert sorted(made) == ["x", "y"]  # no tool call repeated
    assert ledger.tool_calls == 0 and ledger.tools_replayed == 2


async def test_a_side_effecting_tool_runs_once_per_run_with_the_same_arguments() -> None:
    made: list[str] = []
    again = calls(("send", {"to": "bob"}))
    rules = [Rule(agent="a", replies=[again, again, calls(("send", {"to": "eve"})), "done"])]
    ledger = CallLedger()
    token = use_ledger(ledger)
    try:
        async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
            out = await run_with_tools(Agent("a", sim.spec()), "go", counting_tools(made))
    finally:
        reset_ledger(token)
    assert made == ["send bob", "send eve"]
    assert [c["result"] for c in out.calls] == ["sent to bob", "sent to bob", "sent to eve"]
    assert ledger.tool_calls == 2 and ledger.tools_replayed == 1


async def test_tool_calls_are_execute_tool_spans_with_genai_attributes(spans) -> None:
    spans.clear()
    rules = [
        Rule(agent="a", replies=[calls(("fetch", {"name": "x"}), ("fetch", {"name": 3})), "done"])
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        await run_with_tools(Agent("a", sim.spec()), "go", counting_tools([]))
        call_ids = [c["id"] for c in (await sim.requests())[1]["body"]["messages"][1]["tool_calls"]]
    tool_spans = [s for s in spans.get_finished_spans() if s.name == "execute_tool fetch"]
    assert len(tool_spans) == 2
    by_id = {s.attributes["gen_ai.tool.call.id"]: s for s in tool_spans}
    assert sorted(by_id) == sorted(call_ids) and all(call_ids)
    ok, bad = by_id[call_ids[0]], by_id[call_ids[1]]
    assert ok.attributes["gen_ai.operation.name"] == "execute_tool"
    assert (
        ok.attributes["gen_ai.tool.name"] == "fetch"
        and ok.attributes["gen_ai.tool.type"] == "function"
    )
    assert ok.status.is_ok and "error.type" not in ok.attributes
    assert bad.attributes["error.type"] == "ToolError" and not bad.status.is_ok  # bad arguments


async def test_the_budget_counts_tool_calls_and_a_failure_cancels_the_turns_other_calls() -> None:
    made: list[str] = []
    finished: list[str] = []
    turn = calls(("fetch", {"name": "slow", "delay": 5}), ("fetch", {"name": "second"}))
    rules = [Rule(agent="a", replies=[turn, "done"])]
    ledger = CallLedger(budget=Budget(max_tool_calls=1))
    token = use_ledger(ledger)
    try:
        async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
            with pytest.raises(BudgetExceeded, match="1 tool_calls used, the limit is 1"):
                await asyncio.wait_for(
                    run_with_tools(Agent("a", sim.spec()), "go", counting_tools(made, finished)), 4
                )
    finally:
        reset_ledger(token)
    assert made == ["slow"] and finished == []  # the second was refused, the slow one cancelled
    assert ledger.tool_calls == 0  # a cancelled call is not a call made
