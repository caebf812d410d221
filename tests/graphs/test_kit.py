"""The public pattern kit: concurrency inside a node (``ctx.map`` / ``ctx.gather`` /
``ctx.task_group``), keyed model and tool calls that a second run replays, and the
typed transcript and event schema."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, get_args, get_type_hints

import pytest

from concilium import BudgetExceeded, ModelCallError
from concilium.agents import Agent, Budget, FakeModel
from concilium.agents.ledger import CallRecord
from concilium.agents.sim import Faults, Latency, Rule, SimConfig
from concilium.graphs import END, START, Event, Graph, RunContext, current_run, run
from concilium.graphs._kit import ToolReply
from concilium.graphs.kit import PatternOptions, Turn, ask, report_vote, turn, use_tool, user
from concilium.graphs.patterns import debate, self_consistency
from concilium.serving import SimServer
from concilium.tools import Tool, ToolText


async def _deadline(check: Any, seconds: float = 10.0) -> None:
    """Poll ``check()`` (async) until it is true, failing after ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not await check():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def _one_node(name: str, fn: Any, writes: list[str]) -> Graph:
    g = Graph(name).add_node(name, fn, writes=writes)
    return g.add_edge(START, name).add_edge(name, END)


# ------------------------------------------------------------- map / gather


async def test_map_returns_results_in_input_order_not_finishing_order() -> None:
    finished: list[int] = []

    async def slow_first(i: int) -> int:
        # Item i waits for item i+1 to finish, so they finish in reverse order.
        await _deadline(lambda: _true(i == 4 or i + 1 in finished))
        finished.append(i)
        return i * 10

    assert await current_run().map(slow_first, range(5)) == [0, 10, 20, 30, 40]
    assert finished == [4, 3, 2, 1, 0]
    assert await current_run().gather() == []


async def _true(value: bool) -> bool:
    return value


async def test_a_failure_cancels_a_waiting_sibling_and_surfaces_as_itself() -> None:
    sibling_started = asyncio.Event()
    seen: list[str] = []

    async def sibling() -> str:
        sibling_started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    async def failing() -> str:
        await sibling_started.wait()
        raise ModelCallError("boom", model="m", retryable=False)

    with pytest.raises(ModelCallError, match="boom") as info:
        await current_run().gather(sibling(), failing())
    assert not isinstance(info.value, BaseExceptionGroup)
    assert seen == ["cancelled"]


async def test_the_first_failure_wins_and_later_ones_are_noted() -> None:
    started = asyncio.Event()

    async def cleanup_fails() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup went wrong") from None

    async def fails_first() -> None:
        await started.wait()
        raise ValueError("the cause")

    with pytest.raises(ValueError, match="the cause") as info:
        await current_run().gather(cleanup_fails(), fails_first())
    assert "RuntimeError: cleanup went wrong" in " ".join(info.value.__notes__)


async def test_budget_exceeded_inside_a_map_surfaces_from_run() -> None:
    agent = Agent("a", FakeModel(fn=lambda agent, i, msgs: "ok").spec())

    async def judge(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        replies = await ctx.map(lambda i: ask(ctx, agent, user(f"item {i}"), f"c{i}"), range(3))
        return {"answer": ",".join(r.text for r in replies)}

    with pytest.raises(BudgetExceeded):
        await run(_one_node("judge", judge, ["answer"]), "q", budget=Budget(max_calls=2))


async def test_mapped_calls_see_the_node_path_and_a_second_run_replays_them() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: f"\\boxed{{{msgs[-1]['content'][-1]}}}")
    agent = Agent("a", fake.spec())
    opts = PatternOptions("boxed", name="judge_all")
    paths: list[str] = []

    async def judge(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        async def one(i: int) -> Turn:
            paths.append(ctx.path)
            reply = await ask(ctx, agent, user(f"item {i}"), f"c{i}")
            return turn(
                ctx,
                reply,
                text=reply.text,
                answer=opts.fmt.extract(reply.text),
                prompt=f"item {i}",
                sample=i,
            )

        entries = await ctx.map(one, range(3))
        _, update = report_vote(ctx, entries)
        return {**update, "transcript": entries}

    graph = _one_node(opts.name, judge, ["answer", "text", "votes", "transcript"])
    record = CallRecord()
    events: list[Event] = []
    first = await run(graph, "q", record=record, on_event=events.append)
    assert paths == [opts.name] * 3
    assert [e["key"] for e in events if e["type"] == "call_started"] == [
        f"{opts.name}/a/c{i}" for i in range(3)
    ]
    assert [e["answer"] for e in first.transcript] == ["0", "1", "2"] and first.calls == 3
    again = await run(graph, "q", record=record)
    assert again.calls == 0 and again.replayed == 3 and again.transcript == first.transcript
    assert len(fake.requests) == 3


async def test_a_failing_call_cancels_the_siblings_requests_over_http() -> None:
    """Three calls wait on a slow server; a fourth fails (401) once they are in
    flight; the three requests are cancelled at the server, none completes."""
    slow_config = SimConfig(latency=Latency(fixed=5.0))
    broken_config = SimConfig(
        latency=Latency(fixed=0), faults=Faults(first_errors=100, error_status=401)
    )
    async with SimServer(slow_config) as slow, SimServer(broken_config) as broken:
        waiting = [Agent(f"w{i}", slow.spec()) for i in range(3)]
        failing = Agent("f", broken.spec())

        async def in_flight() -> bool:
            return (await slow.stats())["in_flight"] == 3

        async def call(ctx: RunContext, agent: Agent) -> str:
            if agent is failing:
                await _deadline(in_flight)
            return (await ask(ctx, agent, user("What is 2 + 2?"), "q")).text

        async def fan(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
            texts = await ctx.map(lambda a: call(ctx, a), [*waiting, failing])
            return {"answer": texts[0]}

        events: list[Event] = []
        with pytest.raises(ModelCallError) as info:
            await run(_one_node("fan", fan, ["answer"]), "q", on_event=events.append)
        assert info.value.status == 401

        async def all_cancelled() -> bool:
            stats = await slow.stats()
            return stats["cancelled"] == 3 and stats["in_flight"] == 0

        await _deadline(all_cancelled)
        stats = await slow.stats()
    assert stats["requests"] == 3 and stats["completed"] == 0
    failed = sorted(e["agent"] for e in events if e["type"] == "call_failed")
    assert failed == ["f", "w0", "w1", "w2"]


async def test_a_failing_block_cancels_its_task_group_and_surfaces_as_itself() -> None:
    started = asyncio.Event()
    seen: list[str] = []

    async def slow() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    tasks: list[asyncio.Task[None]] = []

    async def block() -> None:
        async with current_run().task_group() as group:
            tasks.append(group.create_task(slow()))
            await started.wait()
            raise ModelCallError("boom", model="m", retryable=False)

    with pytest.raises(ModelCallError, match="boom") as info:
        await block()
    assert not isinstance(info.value, BaseExceptionGroup)
    assert seen == ["cancelled"] and tasks[0].cancelled()


async def test_a_failing_task_cancels_the_block_of_its_task_group() -> None:
    async def fails() -> None:
        raise ValueError("the cause")

    async def block() -> None:
        async with current_run().task_group() as group:
            group.create_task(fails())
            await asyncio.Event().wait()  # only the group's cancellation ends it

    with pytest.raises(ValueError, match="the cause"):
        await block()


# ------------------------------------------------------------------- tools


def _lookup_tool(made: list[str]) -> Tool:
    async def lookup(city: str) -> ToolText:
        "Population of a city (thousands)."
        made.append(city)
        return ToolText(f"{city}: 700 thousand", {"city": city, "thousands": 700})

    return Tool.from_function(lookup)


async def test_a_resumed_run_replays_a_tool_call_and_its_value_without_calling_the_tool(
    tmp_path: Any,
) -> None:
    made: list[str] = []
    tool = _lookup_tool(made)
    replies: dict[int, ToolReply] = {}  # not a list: the resume check reads lists closed over
    async with SimServer(SimConfig(rules=[Rule(agent="a", replies=["Oslo is big."])])) as sim:
        agent = Agent("a", sim.spec())

        async def look(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
            found = await use_tool(ctx, tool, {"city": "Oslo"}, "first", agent=agent.name)
            replies[len(replies)] = found
            said = await ask(ctx, agent, user(found.text), "say")  # fails the first run
            return {"answer": said.text}

        graph = _one_node("look", look, ["answer"])
        db = tmp_path / "run.db"
        events: list[Event] = []
        with pytest.raises(BudgetExceeded):
            await run(graph, "q", budget=Budget(max_calls=0), state_path=db, run_id="r1",
                      on_event=events.append)  # fmt: skip
        result = await run(
            graph, "q", state_path=db, run_id="r1", resume=True, on_event=events.append
        )
    assert made == ["Oslo"]  # the tool ran once, in the first run
    first, again = replies.values()
    assert (first.replayed, again.replayed) == (False, True)
    assert again == ToolReply("lookup", "Oslo: 700 thousand", {"city": "Oslo", "thousands": 700}, True)  # fmt: skip
    assert (first.text, first.value) == (again.text, again.value)
    assert (result.tool_calls, result.tools_replayed, result.answer) == (0, 1, "Oslo is big.")
    tools = [(e["key"], e["status"]) for e in events if e["type"] == "tool"]
    assert tools == [("look/lookup/first", "ok"), ("look/lookup/first", "replayed")]


async def test_tool_call_keys_name_the_node_tool_and_tag_and_are_the_same_in_every_run() -> None:
    made: list[str] = []
    tool = _lookup_tool(made)

    async def look(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        cities = ["Oslo", "Bergen", "Oslo"]  # the same arguments twice, under two tags
        found = await ctx.map(lambda ic: use_tool(ctx, tool, {"city": ic[1]}, f"c{ic[0]}"), list(enumerate(cities)))  # fmt: skip
        return {"answer": " ".join(f.text for f in found)}

    graph = _one_node("look", look, ["answer"])
    keys: list[list[str]] = []
    for _ in range(2):  # two runs, each with a fresh record: nothing to replay
        events: list[Event] = []
        result = await run(graph, "q", record=CallRecord(), on_event=events.append)
        keys.append(sorted(e["key"] for e in events if e["type"] == "tool"))
        assert result.tool_calls == 3 and result.tools_replayed == 0
    assert keys[0] == keys[1] == ["look/lookup/c0", "look/lookup/c1", "look/lookup/c2"]
    assert sorted(made) == ["Bergen", "Bergen", "Oslo", "Oslo", "Oslo", "Oslo"]


# ------------------------------------------------------- transcript and events


def _keys(typed: Any) -> set[str]:
    return set(typed.__required_keys__) | set(typed.__optional_keys__)


def _event_schemas() -> dict[str, set[str]]:
    """Each event type's ``type`` literal -> the keys it may carry."""
    return {get_args(get_type_hints(t)["type"])[0]: _keys(t) for t in get_args(Event)}


@pytest.mark.parametrize("pattern", ["debate", "self_consistency"])
async def test_every_event_and_transcript_entry_fits_the_published_schema(pattern: str) -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: "\\boxed{4}")
    if pattern == "debate":
        graph = debate([Agent(f"a{i}", fake.spec()) for i in range(2)], rounds=2)
    else:
        graph = self_consistency(Agent("s", fake.spec()), samples=3)
    events: list[Event] = []
    result = await run(graph, "2+2?", on_event=events.append)
    schemas = _event_schemas()
    kinds = {e["type"] for e in events}
    assert {
        "node_started",
        "node_finished",
        "call_started",
        "call_finished",
        "turn",
        "vote",
    } <= kinds
    for event in events:
        assert event["type"] in schemas, event
        assert set(event) <= schemas[event["type"]], (
            event["type"],
            set(event) - schemas[event["type"]],
        )
        assert {"path", "t"} <= set(event)
    turn_keys = _keys(Turn)
    for entry in result.transcript:
        assert set(Turn.__required_keys__) <= set(entry) <= turn_keys, set(entry) ^ turn_keys
