"""Division-of-Thoughts over real HTTP to the simulated server: routing by difficulty,
independent sub-tasks in flight together, dependants after their parents and seeing
their answers, and the sub-tasks, calls and tokens each model spent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from concilium import GraphError, WorkflowError
from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import Event, run
from concilium.graphs.patterns import division_of_thoughts
from concilium.graphs.patterns._division_of_thoughts import DotPlan, quantile_confidence
from concilium.serving import SimServer

PLAN = json.dumps({"subtasks": [
    {"id": 1, "task": "Area of a 3 by 4 rectangle", "difficulty": 1},
    {"id": 2, "task": "Area of a circle of radius 2, to two decimals", "difficulty": 5},
    {"id": 3, "task": "Sum the two areas", "depends_on": [1, 2], "difficulty": 2},
]})  # fmt: skip
RULES = [
    Rule(agent="big", match="Break the problem", replies=[PLAN]),
    Rule(agent="big", match="All sub-problems are solved", replies=["The total is \\boxed{24.57}"]),
    Rule(agent="big", match="solve now is: Area of a circle", replies=["12.57"]),
    Rule(agent="tiny", match="solve now is: Area of a 3 by 4", replies=["12"]),
    Rule(agent="tiny", match="solve now is: Sum the two", replies=["24.57"]),
]


def order(events: list[Event], kind: str, tag: str) -> int:
    """The position of the first ``kind`` event of the call whose key ends with ``tag``."""
    return next(i for i, e in enumerate(events)
                if e["type"] == kind and str(e.get("key", "")).endswith(tag))  # fmt: skip


async def test_hard_subtasks_go_large_independent_ones_overlap_dependants_wait() -> None:
    events: list[Event] = []
    async with SimServer(SimConfig(rules=RULES, latency=Latency(fixed=0.1))) as sim:
        spec = sim.spec(capabilities=Capabilities(structured_output=True))
        graph = division_of_thoughts(Agent("tiny", spec), Agent("big", spec), answer="boxed")
        result = await run(
            graph, "Rectangle 3x4 plus circle r=2: total area?", on_event=events.append
        )
        received = await sim.requests()
        stats = await sim.stats()
    solved = {s["id"]: s for s in result.details["subtasks"]}
    # routed by the planner's difficulty: 1 and 2 easy, 5 hard (hard_from=4)
    assert [(solved[i]["model"], solved[i]["agent"]) for i in (1, 2, 3)] == [
        ("small", "tiny"),
        ("large", "big"),
        ("small", "tiny"),
    ]
    assert [solved[i]["level"] for i in (1, 2, 3)] == [0, 0, 1]
    # 1 and 2 are in flight together; 3 starts only after both ended
    started = [order(events, "call_started", f"subtask{i}/{solved[i]['model']}") for i in (1, 2, 3)]
    ended = [order(events, "call_finished", f"subtask{i}/{solved[i]['model']}") for i in (1, 2, 3)]
    assert max(started[:2]) < min(ended[:2]) and stats["max_in_flight"] == 2
    assert started[2] > max(ended[:2])
    # and sees its parents' answers
    third = next(r for r in received if "solve now is: Sum" in r["body"]["messages"][-1]["content"])
    prompt = third["body"]["messages"][-1]["content"]
    assert third["agent"] == "tiny" and "Answer: 12\n" in prompt and "Answer: 12.57" in prompt
    assert received[0]["body"]["response_format"]["json_schema"]["name"] == "DotPlan"
    # per model: sub-tasks, calls (plan and compose are the large model's) and tokens
    models = result.details["models"]
    assert {m: (v["subtasks"], v["calls"]) for m, v in models.items()} == {
        "small": (2, 2),
        "large": (1, 3),
    }
    assert stats["by_agent"] == {"tiny": 2, "big": 3}
    for row in models.values():
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert sum(r["prompt_tokens"] for r in models.values()) == result.usage.prompt_tokens
    assert sum(r["completion_tokens"] for r in models.values()) == result.usage.completion_tokens
    assert result.answer == "24.57" and result.calls == 5


@pytest.mark.parametrize(("threshold", "escalated"), [(1.0, 3), (0.0, 0)])
async def test_confidence_route_escalates_unsure_small_answers(
    threshold: float, escalated: int
) -> None:
    async with SimServer(SimConfig(rules=RULES, latency=Latency(fixed=0))) as sim:
        spec = sim.spec(capabilities=Capabilities(structured_output=True, logprobs=True))
        graph = division_of_thoughts(
            Agent("tiny", spec), Agent("big", spec), route="confidence", threshold=threshold
        )
        result = await run(graph, "Rectangle 3x4 plus circle r=2: total area?")
        received = await sim.requests()
    small_calls = [r for r in received if r["agent"] == "tiny"]
    # the small model tries every sub-task, with logprobs, whatever its rated difficulty
    assert len(small_calls) == 3 and all(r["body"]["logprobs"] for r in small_calls)
    solved = result.details["subtasks"]
    assert all(0.0 < s["confidence"] < 1.0 for s in solved)
    assert sum(s["model"] == "large" for s in solved) == escalated
    models = result.details["models"]
    assert (models["small"]["calls"], models["large"]["calls"]) == (3, 2 + escalated)
    assert (models["small"]["subtasks"], models["large"]["subtasks"]) == (3 - escalated, escalated)


def test_dependencies_on_later_or_unknown_subtasks_are_dropped() -> None:
    from concilium.graphs.patterns._division_of_thoughts import dependency_graph

    plan = DotPlan.model_validate({"subtasks": [
        {"id": 10, "task": "a", "depends_on": [30]},
        {"id": 20, "task": "b", "depends_on": [10, 10, 99]},
        {"id": 30, "task": "c", "depends_on": [20, 10]},
    ]})  # fmt: skip
    nodes, dropped = dependency_graph(plan, 5)
    assert [(n["id"], n["depends_on"], n["level"]) for n in nodes] == [
        (1, [], 0),
        (2, [1], 1),
        (3, [1, 2], 2),
    ]
    assert dropped == [[30, 10], [99, 20]]
    assert len(dependency_graph(plan, 2)[0]) == 2


def test_quantile_confidence_and_bad_options() -> None:
    assert quantile_confidence([0.0, 0.0]) == 1.0 and quantile_confidence([]) == 0.0
    with pytest.raises(GraphError, match="distinct names"):
        division_of_thoughts(Agent("a", _spec()), Agent("a", _spec()))
    with pytest.raises(GraphError, match="threshold"):
        division_of_thoughts(Agent("a", _spec()), Agent("b", _spec()), threshold=2.0)


def _spec() -> Any:
    from concilium.agents import FakeModel

    return FakeModel().spec()


WORKFLOW = """
name: dot
models:
  m: {model: hosted_vllm/x, api_base: http://127.0.0.1:8000/v1}
agents:
  s: {model: m}
  l: {model: m}
workflow:
  kind: division_of_thoughts
  small: s
  large: {kind: self_consistency, name: sc, agent: l, samples: 3}
"""


def test_a_nested_large_pattern_needs_a_planner_agent(tmp_path: Path) -> None:
    from concilium.graphs.workflows import load_workflow

    path = tmp_path / "dot.yaml"
    path.write_text(WORKFLOW)
    with pytest.raises(WorkflowError, match="needs an agent name, not a pattern: the planner"):
        load_workflow(path)
    path.write_text(WORKFLOW.replace("  large: {kind", "  planner: l\n  large: {kind"))
    assert load_workflow(path).graph.name == "dot"
