"""One key scheme for every tool call a pattern makes: the plan executor's tool calls
are the kit's ``use_tool`` calls, keyed ``<node path>/<tool>/<tag>`` like react's and
search decomposition's, and a plan task's result reaches the next task as the tool
gave it."""

from __future__ import annotations

from concilium.agents import Agent
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import Event, run
from concilium.graphs.patterns import plan_and_execute, react
from concilium.serving import SimServer
from concilium.tools import Tool, ToolRegistry, ToolText, builtin_tools

PLAN = """1. population("Oslo")
2. population("Bergen")
3. calculator("$1 + $2")
4. join()<END_OF_PLAN>"""


def registry() -> ToolRegistry:
    def population(city: str) -> ToolText:
        "Population of a city (thousands)."
        thousands = {"Oslo": 700, "Bergen": 290}[city]
        return ToolText(str(thousands), {"city": city, "thousands": thousands})

    return ToolRegistry([Tool.from_function(population), builtin_tools().get("calculator")])


async def tool_keys(graph_of: str) -> tuple[list[str], list[dict[str, object]]]:
    rules = [
        Rule(agent="planner", replies=[PLAN]),
        Rule(agent="joiner", replies=["Action: Finish(990)"]),
        Rule(agent="r", replies=['Action: population("Oslo")', "Answer: 700"]),
    ]
    events: list[Event] = []
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        if graph_of == "plan":
            graph = plan_and_execute(Agent("planner", sim.spec()), Agent("joiner", sim.spec()), registry())  # fmt: skip
        else:
            graph = react(Agent("r", sim.spec()), registry())
        result = await run(graph, "Oslo and Bergen?", on_event=events.append)
    tasks = result.details["rounds"][0]["tasks"] if graph_of == "plan" else []
    return [str(e["key"]) for e in events if e["type"] == "tool"], tasks


async def test_plan_tasks_are_keyed_as_every_kit_tool_call_is() -> None:
    plan_keys, tasks = await tool_keys("plan")
    (react_key,), _ = await tool_keys("react")
    # <node path>/<tool>/<tag>: react's tag is its step, the executor's the plan and task
    assert react_key == "loop/population/step0"
    path = plan_keys[0].split("/population/")[0]
    assert sorted(plan_keys) == [
        f"{path}/calculator/plan/0/3",
        f"{path}/population/plan/0/1",
        f"{path}/population/plan/0/2",
    ]
    # the calculator got the populations' text; the record keeps the tools' results
    assert [t["result"] for t in tasks[:3]] == ["700", "290", "990"]
