"""Plan-and-execute and ReAct over real HTTP to the simulated server (scripted planner);
a resumed run of either repeats no tool call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import Event, run
from concilium.graphs.patterns import plan_and_execute, react
from concilium.graphs.patterns._plan_and_execute import parse_decision
from concilium.serving import SimServer
from concilium.tools import Tool, ToolRegistry, builtin_tools

PLAN = """Thought: both populations at once
1. population("Oslo")
2. population("Bergen")
3. calculator("$1 + $2")
4. join()<END_OF_PLAN>"""


async def until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within_s`` seconds saying what."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, f"timed out after {within_s} s waiting for {what}"
        await asyncio.sleep(0.005)


def registry(together: set[str] | frozenset[str] = frozenset()) -> ToolRegistry:
    """A population lookup; a city in ``together`` answers only once all of them are
    being looked up, so a test proves the lookups overlap without reading a clock."""
    looking_up: set[str] = set()

    async def population(city: str) -> int:
        "Population of a city (thousands)."
        looking_up.add(city)
        if city in together:
            await until(lambda: together <= looking_up, f"lookups of {sorted(together)} at once")
        await asyncio.sleep(0.2)
        return {"Oslo": 700, "Bergen": 290}.get(city, 0)

    return ToolRegistry([Tool.from_function(population), builtin_tools().get("calculator")])


def test_joiner_answers_keep_their_parentheses() -> None:
    assert parse_decision("Thought: t\nAction: Finish(990 (thousand))") == (
        "finish",
        "990 (thousand)",
    )
    assert parse_decision("Action: Replan(need Bergen)") == ("replan", "need Bergen")
    assert parse_decision("just text") == ("finish", "just text")


async def test_tasks_start_while_the_plan_streams_and_the_joiner_finishes() -> None:
    rules = [
        Rule(agent="planner", replies=[PLAN]),
        Rule(agent="joiner", replies=["Thought: added\nAction: Finish(990 (thousand))"]),
    ]
    config = SimConfig(rules=rules, latency=Latency(ttft=0.02, per_token=0.05))
    async with SimServer(config, process=True) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), registry({"Oslo", "Bergen"})
        )
        result = await run(graph, "How many people live in Oslo and Bergen together?")
        received = await sim.requests()
    assert result.answer == "990 (thousand)" and result.details["replans"] == 0
    planner_body = received[0]["body"]
    assert planner_body["stream"] is True and planner_body["stop"] == ["<END_OF_PLAN>"]
    tasks = {t["index"]: t for t in result.details["rounds"][0]["tasks"]}
    assert tasks[3]["result"] == "990" and tasks[3]["args"] == {"expression": "700 + 290"}
    assert tasks[1]["started"] < tasks[3]["emitted"]  # running before the planner wrote line 3
    # the two lookups overlap (registry(together) made each wait for the other)
    assert tasks[2]["started"] < tasks[1]["ended"] and tasks[1]["started"] < tasks[2]["ended"]
    joined = received[1]["body"]["messages"][-1]["content"]
    assert '1. population({"city": "Oslo"}) -> 700' in joined and "-> 990" in joined


async def test_a_replan_sees_the_earlier_plan_its_results_and_the_reason() -> None:
    first = '1. population("Oslo")\n2. join()'
    second = '1. population("Bergen")\n2. join()'
    rules = [Rule(agent="planner", replies=[first, second]),
             Rule(agent="joiner", replies=["Thought: no Bergen\nAction: Replan(Bergen is missing)", "Action: Finish(990)"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), registry(), max_replans=2
        )
        result = await run(graph, "Oslo plus Bergen?")
        prompts = [
            r["body"]["messages"][-1]["content"]
            for r in await sim.requests()
            if r["agent"] == "planner"
        ]
    assert result.answer == "990" and result.details["replans"] == 1
    assert "Previous attempts" not in prompts[0]
    assert 'population({"city": "Oslo"}) -> 700' in prompts[1] and "Bergen is missing" in prompts[1]


async def test_an_unreadable_plan_goes_back_to_the_planner_with_the_error() -> None:
    rules = [Rule(agent="planner", replies=['1. populaton("Oslo")\n2. join()', '1. population("Oslo")\n2. join()']),
             Rule(agent="joiner", replies=["Action: Finish(700)"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), registry()
        )
        result = await run(graph, "Oslo?")
        prompts = [
            r["body"]["messages"][-1]["content"]
            for r in await sim.requests()
            if r["agent"] == "planner"
        ]
    assert (
        "no tool 'populaton'. Did you mean 'population'"
        in result.details["rounds"][0]["plan_error"]
    )
    assert "Plan 1 could not be run" in prompts[1] and result.answer == "700"


async def test_the_last_round_must_finish() -> None:
    rules = [Rule(agent="planner", replies=['1. population("Oslo")\n2. join()']),
             Rule(agent="joiner", replies=["Action: Replan(want more)"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), registry(), max_replans=0
        )
        result = await run(graph, "Oslo?")
        join_prompt = (await sim.requests())[-1]["body"]["messages"][-1]["content"]
    assert (
        result.details["rounds"][0]["decision"] == "finish"
        and "This is the last round" in join_prompt
    )


async def test_a_json_plan_under_structured_output() -> None:
    plan = json.dumps({"tasks": [{"id": 1, "tool": "population", "args": {"city": "Oslo"}},
                                 {"id": 2, "tool": "calculator", "args": {"expression": "$1 * 2"}}]})  # fmt: skip
    rules = [
        Rule(agent="planner", replies=[plan]),
        Rule(agent="joiner", replies=["Action: Finish(1400)"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec(capabilities=Capabilities(structured_output=True))
        graph = plan_and_execute(
            Agent("planner", spec), Agent("joiner", spec), registry(), plan_format="json"
        )
        result = await run(graph, "Twice Oslo?")
        body = (await sim.requests())[0]["body"]
    assert body["response_format"]["json_schema"]["name"] == "JsonPlan"
    tasks = {t["index"]: t for t in result.details["rounds"][0]["tasks"]}
    assert tasks[2]["result"] == "1400" and result.answer == "1400"


async def test_react_calls_one_tool_per_turn() -> None:
    rules = [
        Rule(
            agent="r",
            replies=[
                'Thought: look up\nAction: population("Oslo")',
                'Thought: double\nAction: calculator("700 * 2")',
                "Answer: 1400",
            ],
        )
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(react(Agent("r", sim.spec()), registry()), "Twice Oslo?")
        prompts = [r["body"]["messages"][-1]["content"] for r in await sim.requests()]
    assert result.answer == "1400" and result.details["tool_calls"] == 2 and len(prompts) == 3
    assert "Observation: 700" in prompts[1] and "Observation: 1400" in prompts[2]


def counting_registry(made: list[str]) -> ToolRegistry:
    async def population(city: str) -> int:
        "Population of a city (thousands)."
        made.append(city)
        return {"Oslo": 700, "Bergen": 290}.get(city, 0)

    return ToolRegistry([Tool.from_function(population), builtin_tools().get("calculator")])


async def test_a_resumed_plan_and_execute_repeats_no_tool_call(tmp_path) -> None:
    made: list[str] = []
    rules = [
        Rule(agent="planner", replies=[PLAN]),
        Rule(agent="joiner", replies=["Action: Finish(990)"]),
    ]
    db = tmp_path / "run.db"
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), counting_registry(made)
        )
        with pytest.raises(BudgetExceeded):  # the plan runs, then the joiner's call is over budget
            await run(
                graph, "Oslo and Bergen?", budget=Budget(max_calls=1), state_path=db, run_id="r1"
            )
        assert sorted(made) == ["Bergen", "Oslo"]
        events: list[dict] = []
        result = await run(
            graph,
            "Oslo and Bergen?",
            state_path=db,
            run_id="r1",
            resume=True,
            on_event=events.append,
        )
    assert result.answer == "990" and result.calls == 1  # only the joiner was called again
    assert sorted(made) == ["Bergen", "Oslo"]  # no tool call repeated
    tasks = [t for t in result.details["rounds"][0]["tasks"] if t["tool"] != "join"]
    assert len(tasks) == 3 and all(t["replayed"] for t in tasks) and tasks[2]["result"] == "990"
    assert [e["status"] for e in events if e["type"] == "tool"] == ["replayed"] * 3
    assert (result.tool_calls, result.tools_replayed) == (0, 3)


async def test_a_resumed_react_repeats_no_tool_call(tmp_path, spans) -> None:
    made: list[str] = []
    rules = [
        Rule(
            agent="r",
            replies=['Action: population("Oslo")', 'Action: population("Bergen")', "Answer: 990"],
        )
    ]
    db = tmp_path / "run.db"
    spans.clear()
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = react(Agent("r", sim.spec()), counting_registry(made))
        with pytest.raises(
            BudgetExceeded
        ):  # two steps with their tool calls, then the third step fails
            await run(
                graph, "Oslo plus Bergen?", budget=Budget(max_calls=2), state_path=db, run_id="r1"
            )
        assert made == ["Oslo", "Bergen"]
        events: list[Event] = []
        result = await run(graph, "Oslo plus Bergen?", state_path=db, run_id="r1", resume=True,
                           on_event=events.append)  # fmt: skip
    assert (
        result.answer == "990" and result.details["tool_calls"] == 2 and made == ["Oslo", "Bergen"]
    )
    assert (result.tool_calls, result.tools_replayed) == (0, 2)
    replayed = [(e["key"], e["status"]) for e in events if e["type"] == "tool"]
    assert replayed == [("loop/population/step0", "replayed"), ("loop/population/step1", "replayed")]  # fmt: skip
    executed = [s for s in spans.get_finished_spans() if s.name == "execute_tool population"]
    assert len(executed) == 2 and {s.attributes["gen_ai.operation.name"] for s in executed} == {
        "execute_tool"
    }


async def test_the_budget_counts_react_tool_calls() -> None:
    made: list[str] = []
    rules = [
        Rule(
            agent="r",
            replies=['Action: population("Oslo")', 'Action: population("Bergen")', "Answer: 990"],
        )
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        with pytest.raises(BudgetExceeded, match="1 tool_calls used, the limit is 1"):
            await run(
                react(Agent("r", sim.spec()), counting_registry(made)),
                "?",
                budget=Budget(max_tool_calls=1),
            )
    assert made == ["Oslo"]


async def test_a_tool_budget_fails_the_plan_and_the_result_counts_tool_calls() -> None:
    made: list[str] = []
    rules = [
        Rule(agent="planner", replies=[PLAN]),
        Rule(agent="joiner", replies=["Action: Finish(990)"]),
    ]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), counting_registry(made)
        )
        with pytest.raises(BudgetExceeded, match="1 tool_calls used, the limit is 1"):
            await run(graph, "Oslo and Bergen?", budget=Budget(max_tool_calls=1))
        assert len(made) == 1  # the second lookup was refused, not made
        result = await run(graph, "Oslo and Bergen?", budget=Budget(max_tool_calls=3))
    assert result.answer == "990" and (result.tool_calls, result.tools_replayed) == (3, 0)
    assert result.to_json()["tool_calls"] == 3 and result.to_json()["tools_replayed"] == 0


async def test_a_cancelled_run_closes_the_planners_stream() -> None:
    """The planner streams while the executor runs its tasks; cancelling the run
    (the caller gave up) stops both: the planner's request is closed, not left
    writing in the background."""
    made: list[str] = []
    rambling = "Thought: " + " ".join(["and then"] * 100)  # under the sim's 256 words
    plan = f'1. population("Oslo")\n{rambling}\n2. join()'
    rules = [Rule(agent="planner", replies=[plan]), Rule(agent="joiner", replies=["Action: Finish(700)"])]  # fmt: skip
    config = SimConfig(rules=rules, latency=Latency(ttft=0.01, per_token=0.05))
    events: list[dict] = []
    async with SimServer(config, process=True) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), counting_registry(made)
        )
        running = asyncio.ensure_future(run(graph, "Oslo?", on_event=events.append))
        await until(lambda: made == ["Oslo"], "the first task to run while the plan streams")
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        planner = [
            e for e in events if e.get("agent") == "planner" and e["type"].startswith("call_")
        ]
    assert [e["type"] for e in planner] == ["call_started", "call_failed"]


async def test_a_tool_budget_stops_the_planner_mid_stream() -> None:
    """The second task breaks the tool budget while the planner is still writing:
    the run fails at once and the planner's request is closed, instead of the
    executor reading the rest of the plan first."""
    made: list[str] = []
    rambling = "Thought: " + " ".join(["and then"] * 100)  # under the sim's 256 words
    plan = f'1. population("Oslo")\n2. population("Bergen")\n{rambling}\n3. join()'
    rules = [Rule(agent="planner", replies=[plan]), Rule(agent="joiner", replies=["Action: Finish(1)"])]  # fmt: skip
    config = SimConfig(rules=rules, latency=Latency(ttft=0.01, per_token=0.05))
    events: list[dict] = []
    async with SimServer(config, process=True) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), counting_registry(made)
        )
        with pytest.raises(BudgetExceeded, match="tool_calls"):
            await run(graph, "Oslo?", budget=Budget(max_tool_calls=1), on_event=events.append)
    planner = [e for e in events if e.get("agent") == "planner" and e["type"].startswith("call_")]
    assert made == ["Oslo"]
    # the planner's streamed call ended as failed (closed), not as a finished reply
    assert [e["type"] for e in planner] == ["call_started", "call_failed"]
