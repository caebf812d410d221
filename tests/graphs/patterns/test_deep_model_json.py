"""A model's JSON nested 100,000 deep (a plan, a manager's sub-tasks, a judge's
selection) is a malformed reply: one repair turn, then ``OutputParseError`` or the
pattern's own fallback; never a RecursionError. The models are ``FakeModel`` (in
process, scripted); the patterns are the real ones."""

from __future__ import annotations

from typing import Any

import pytest

from concilium import OutputParseError
from concilium.agents import Agent, FakeModel
from concilium.graphs import run_sync
from concilium.graphs.kit import PatternOptions
from concilium.graphs.patterns import division_of_thoughts, manager_worker, plan_and_execute
from concilium.graphs.patterns._mixture import parse_selection
from concilium.graphs.patterns._research import parse_subquestions
from concilium.tools import builtin_tools
from concilium.tools.plans import PlanError, parse_json_plan

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_manager_plan_nested_100000_deep_is_an_output_parse_error() -> None:
    reply = '{"subtasks": ' + DEEP + "}"
    fake = FakeModel({"boss": [reply, reply]}, default="a report")
    graph = manager_worker(Agent("boss", fake.spec()), [Agent("w", fake.spec())])
    with pytest.raises(OutputParseError, match="nested deeper than 64 levels"):
        run_sync(graph, "Plan it.")
    assert len(fake.requests_of("boss")) == 2  # the reply and its one repair turn


def test_a_division_of_thoughts_plan_nested_100000_deep_is_an_output_parse_error() -> None:
    reply = '{"subtasks": [{"id": 1, "task": ' + DEEP + "}]}"
    fake = FakeModel({"big": [reply, reply]}, default="42")
    graph = division_of_thoughts(Agent("tiny", fake.spec()), Agent("big", fake.spec()))
    with pytest.raises(OutputParseError, match="nested deeper than 64 levels"):
        run_sync(graph, "6 * 7?")


def test_a_json_tool_plan_nested_100000_deep_is_replanned_then_refused() -> None:
    reply = '{"tasks": [{"id": 1, "tool": "calculator", "args": ' + DEEP + "}]}"
    fake = FakeModel({"planner": reply}, default="Action: Finish(x)")
    graph = plan_and_execute(
        Agent("planner", fake.spec()),
        Agent("joiner", fake.spec()),
        builtin_tools(),
        plan_format="json",
        max_replans=1,
    )
    with pytest.raises(PlanError, match=r"no plan could be run in 2 round.*nested deeper than 64"):
        run_sync(graph, "6 * 7?")


def test_parse_json_plan_refuses_deep_arguments_and_orders_a_long_chain() -> None:
    deep: Any = "6 * 7"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(PlanError, match="nested deeper than 64"):
        parse_json_plan({"tasks": [{"id": 1, "tool": "calculator", "args": deep}]}, builtin_tools())
    # 3,000 tasks, each using the one before: ordered without recursion
    chain = [{"id": 1, "tool": "calculator", "args": ["1 + 1"]}]
    chain += [{"id": i, "tool": "calculator", "args": [f"${i - 1} + 1"]} for i in range(2, 3001)]
    tasks = parse_json_plan({"tasks": chain[::-1]}, builtin_tools())
    assert [t.index for t in tasks[:3]] == [1, 2, 3] and tasks[-1].deps[-1] == 3000
    cyclic = [{"id": 1, "tool": "calculator", "args": ["$2"]},
              {"id": 2, "tool": "calculator", "args": ["$1"]}]  # fmt: skip
    with pytest.raises(PlanError, match=r"cycle: 1 -> 2 -> 1"):
        parse_json_plan({"tasks": cyclic}, builtin_tools())


def test_a_judge_selection_nested_100000_deep_selects_nothing() -> None:
    assert parse_selection('{"chosen": ' + DEEP + ', "end": true}', count=3, k=2) is None
    assert parse_selection('{"chosen": [1], "end": true}', count=3, k=2) == ([1], True)


def test_a_json_answer_field_nested_100000_deep_is_no_answer() -> None:
    extract = PatternOptions({"field": "answer"}).fmt.extract  # the {field: answer} format
    assert extract('{"answer": ' + DEEP + "}") is None
    assert extract('Sure. {"answer": 42}') == "42"


def test_sub_questions_nested_100000_deep_fall_back_to_lines() -> None:
    text = '{"questions": ' + DEEP + "}\n1. Who leads?"
    assert parse_subquestions(text, 5) == ["Who leads?"]
