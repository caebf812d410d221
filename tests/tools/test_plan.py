"""The plan parser on well-formed, streamed, malformed and hostile plans."""

from __future__ import annotations

import pytest

from concilium.agents import Agent
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import plan_and_execute
from concilium.serving import SimServer
from concilium.tools import Tool, ToolRegistry
from concilium.tools._builtin import CALCULATOR
from concilium.tools._plan import Ref
from concilium.tools.plans import (
    PlanError,
    PlanParser,
    parse_arguments,
    parse_json_plan,
    parse_plan,
    resolve,
)


def registry() -> ToolRegistry:
    def search(query: str) -> str:
        "Search."
        return query

    def math(problem: str, context: list = []) -> str:  # noqa: B006 - a literal default for the schema
        "Math."
        return problem

    return ToolRegistry([Tool.from_function(search), Tool.from_function(math)])


PLAN = """Thought: look both up
1. search("Arthur's Magazine")
2. search(query="First for Women")
3. math("ratio of $1 to ${2}", ["$1", $2])
4. join()<END_OF_PLAN>
ignored after join"""


def test_a_well_formed_plan() -> None:
    tasks = parse_plan(PLAN, registry())
    assert [(t.index, t.tool, t.deps) for t in tasks] == [
        (1, "search", ()),
        (2, "search", ()),
        (3, "math", (1, 2)),
        (4, "join", (1, 2, 3)),
    ]
    assert tasks[0].thought == "look both up" and tasks[1].args == {"query": "First for Women"}
    assert tasks[2].args == {"problem": "ratio of $1 to ${2}", "context": [Ref(1), Ref(2)]}
    assert resolve(tasks[2].args, {1: 10, 2: [5]}, tasks[2].deps) == {
        "problem": "ratio of 10 to [5]",
        "context": [10, [5]],
    }


def test_streamed_one_character_at_a_time_gives_the_same_tasks_as_soon_as_each_line_ends() -> None:
    parser = PlanParser(registry())
    seen: list[tuple[int, int]] = []
    for position, ch in enumerate(PLAN):
        seen += [(t.index, position) for t in parser.feed(ch)]
    seen += [(t.index, len(PLAN)) for t in parser.close()]
    assert [i for i, _ in seen] == [1, 2, 3, 4]
    assert seen[0][1] == PLAN.index("\n2.")  # task 1 is out when its line's newline arrives


def test_a_literal_dollar_amount_survives() -> None:
    tasks = parse_plan('1. search("a")\n2. search("costs $10, was $1")\n3. join()', registry())
    assert tasks[1].deps == (1,)
    assert resolve(tasks[1].args, {1: "X"}, tasks[1].deps) == {"query": "costs $10, was X"}
    lone = parse_plan('1. search("price: $10")', registry())
    assert lone[0].deps == () and lone[0].args == {"query": "price: $10"}


@pytest.mark.parametrize(
    "plan, message",
    [
        ('1. search("x")\n2. serch("y")', "line 2 .*there is no tool 'serch'. Did you mean 'search'"),
        ("1. search(__import__('os').system('id'))", "argument 1 is not a literal value"),
        ('1. search("a")\n2. math(open("/etc/passwd").read())', "line 2 .*not a literal value"),
        ('1. search($2)\n2. search("b")', "task 1 refers to \\$2, which is a later task"),
        ('1. search("a")\n3. search("$2")', "task 3 refers to \\$2, which is not a task of this plan"),
        ('1. search("a"\n2. join()', "line 1 .*cannot read this line"),
        ("Here is my plan:\n1. search('a')", "line 1 .*cannot read this line"),
        ('1. search("a", "b")', "search takes 1 argument"),
        ('2. search("a")\n1. search("b")', "task number 1 does not follow 2"),
        ('1. math(**{"problem": "x"})', "not valid|\\*\\* are not allowed"),
        ("", "the plan has no tasks"),
    ],
)  # fmt: skip
def test_bad_plans_are_reported_with_the_line_and_the_fix(plan: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(plan, registry())


def test_json_plans_are_ordered_by_dependency_and_cycles_are_refused() -> None:
    plan = {"tasks": [{"id": 3, "tool": "math", "args": {"problem": "$1 + $2"}},
                      {"id": 1, "tool": "search", "args": {"query": "a"}},
                      {"id": 2, "tool": "search", "args": ["$1"]}]}  # fmt: skip
    tasks = parse_json_plan(plan, registry())
    assert [(t.index, t.deps) for t in tasks] == [(1, ()), (2, (1,)), (3, (1, 2)), (4, (1, 2, 3))]
    assert tasks[1].args == {"query": Ref(1)}
    cyclic = {
        "tasks": [
            {"id": 1, "tool": "search", "args": ["$2"]},
            {"id": 2, "tool": "search", "args": ["$1"]},
        ]
    }
    with pytest.raises(PlanError, match="cycle: 1 -> 2 -> 1"):
        parse_json_plan(cyclic, registry())
    with pytest.raises(PlanError, match="refers to \\$7"):
        parse_json_plan({"tasks": [{"id": 1, "tool": "search", "args": ["$7"]}]}, registry())


HOSTILE_LINES = [
    ('search("a").upper()', "an attribute after the call"),
    ('search("a").real', "cannot read this line as one tool call"),
    ('search("a")("b")', "a second call on the result"),
    ('search("a")["x"]("b")', "a subscript after the call"),
    ('search("a")[0]', "cannot read this line as one tool call"),
    ('search("a") search("b")', "exactly one call per line"),
    ('search("a"); search("b")', "exactly one call per line"),
    ('search("a"), 2', "cannot read this line as one tool call"),
    ('search("a"), (2)', "a comma and another expression after the call"),
    ('search("a") or search("b")', "more code around the call"),
    ('search("a") if $1 else math("b")', "more code around the call"),
    ('search("a")  # a comment)', "a comment after the call"),
    ('x = search("a")', "cannot read this line"),
]


@pytest.mark.parametrize("line, message", HOSTILE_LINES)
def test_a_line_with_more_than_one_call_is_a_plan_error_naming_the_line(
    line: str, message: str
) -> None:
    plan = f'1. search("first")\n2. {line}\n3. join()'
    with pytest.raises(PlanError, match=message) as caught:
        parse_plan(plan, registry())
    assert caught.value.line == 2 and caught.value.text == f"2. {line}"
    streamed = PlanParser(registry())

    def feed_one_character_at_a_time() -> None:
        for ch in plan:
            streamed.feed(ch)

    with pytest.raises(PlanError, match=message):
        feed_one_character_at_a_time()


@pytest.mark.parametrize(
    "arguments",
    ['"a").upper(', '"a")("b"', '"a")["x"]("b"', '"a"), (2', '"a") or search("b"', '"a")  # )'],
)
def test_parse_arguments_never_reads_code_after_the_call_as_other_arguments(arguments: str) -> None:
    # ReAct reads "Action: tool(<arguments>)" with its own pattern and calls this directly
    with pytest.raises(PlanError, match="exactly one"):
        parse_arguments(arguments)


async def test_a_line_with_code_after_the_call_goes_back_to_the_planner() -> None:
    # the contract with plan_and_execute: a PlanError (not an AssertionError) is a failed
    # round that the next planner prompt explains, never the end of the run
    hostile = '1. calculator("6 * 7").real()\n2. join()'
    fixed = '1. calculator("6 * 7")\n2. join()'
    rules = [Rule(agent="planner", replies=[hostile, fixed]),
             Rule(agent="joiner", replies=["Action: Finish(42)"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        graph = plan_and_execute(
            Agent("planner", sim.spec()), Agent("joiner", sim.spec()), ToolRegistry([CALCULATOR])
        )
        result = await run(graph, "6 * 7?")
        prompts = [
            r["body"]["messages"][-1]["content"]
            for r in await sim.requests()
            if r["agent"] == "planner"
        ]
    error = result.details["rounds"][0]["plan_error"]
    assert "plan line 1" in error and "an attribute after the call" in error
    assert "Plan 1 could not be run" in prompts[1] and result.answer == "42"
