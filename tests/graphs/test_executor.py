"""The event-driven executor: every task starts when its last dependency ends, also
while the plan streams in; failures skip dependents or cancel; results replay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from concilium import BudgetExceeded
from concilium.agents import Budget, CallLedger, SqliteCallRecord, reset_ledger, use_ledger
from concilium.graphs import Executor
from concilium.tools import PlanParser, Task, Tool, ToolError, ToolRegistry, parse_plan


async def until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within_s`` seconds saying what."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, f"timed out after {within_s} s waiting for {what}"
        await asyncio.sleep(0.005)


def tools(log: list[str] | None = None) -> ToolRegistry:
    async def wait(seconds: float, label: str = "") -> str:
        "Sleep, then return the label."
        await asyncio.sleep(seconds)
        if log is not None:
            log.append(label)
        return label or f"slept {seconds}"

    async def fail(reason: str) -> str:
        "Always fails."
        raise ValueError(reason)

    def charge(amount: int) -> str:
        "A side effect: counts its calls."
        charges.append(amount)
        return f"charged {amount}"

    charges: list[int] = []
    registry = ToolRegistry([Tool.from_function(wait), Tool.from_function(fail),
                             Tool.from_function(charge, side_effects=True)])  # fmt: skip
    registry.charges = charges  # type: ignore[attr-defined]
    return registry


def assert_starts_after_its_dependencies(runs: dict) -> None:
    for r in runs.values():
        if r.deps and r.tool != "join":
            last = max(runs[d].ended for d in r.deps)
            assert r.started >= last, (r.index, r.started, last)


async def test_an_unbalanced_dag_finishes_in_its_critical_path_time() -> None:
    plan = """1. wait(0.6, "a")
2. wait(0.05, "b")
3. wait(0.05, "$2 then c")
4. wait(0.05, "$3 then d")
5. wait(0.05, "$1 and $4")
6. join()"""
    runs = await Executor(tools()).run(parse_plan(plan, tools()))
    assert_starts_after_its_dependencies(runs)
    # the critical path is 1 -> 5: the whole chain 2 -> 3 -> 4 runs while 1 does
    # (orderings with 0.45 s of slack, not milliseconds)
    assert runs[1].started < runs[2].started < runs[4].ended < runs[1].ended
    assert runs[5].started >= max(runs[1].ended, runs[4].ended)
    assert runs[5].result == "a and b then c then d"


async def test_a_task_starts_while_the_plan_is_still_streaming() -> None:
    done: list[str] = []
    registry = tools(done)
    parser = PlanParser(registry)
    lines = [
        '1. wait(0.3, "x")\n',
        '2. wait(0.05, "$1!")\n',
        '3. wait(0.01, "late")\n',
        "4. join()\n",
    ]

    # a slow planner: it writes line 3 only once task 2 has run, and line 4 once task 3
    # has; an executor that waited for more of the plan would time out here
    waits = {"2.": ("x!", "task 2 to run before line 3 is written"),
             "3.": ("late", "task 3 to run before line 4 is written")}  # fmt: skip

    async def planner() -> AsyncIterator[Task]:
        for line in lines:
            for task in parser.feed(line):
                yield task
            if line[:2] in waits:
                label, what = waits[line[:2]]
                await until(lambda label=label: label in done, what)

    runs = await Executor(registry).run(planner())
    # task 1 (0.3 s) is still running when line 2 arrives; task 2 starts when it ends
    assert runs[2].emitted < runs[1].ended <= runs[2].started
    assert runs[2].started < runs[3].emitted and runs[2].result == "x!"
    assert runs[3].emitted <= runs[3].started < runs[4].emitted


async def test_a_failure_skips_its_dependents_and_the_rest_goes_on() -> None:
    plan = '1. fail("boom")\n2. wait(0.01, "$1")\n3. wait(0.05, "independent")\n4. join()'
    runs = await Executor(tools()).run(parse_plan(plan, tools()))
    assert runs[1].status == "failed" and "ValueError: boom" in runs[1].error
    assert runs[2].status == "skipped" and "task 1 (fail) did not succeed" in runs[2].error
    assert runs[3].status == "ok" and runs[4].status == "skipped"


async def test_cancel_policy_stops_everything_still_running() -> None:
    log: list[str] = []
    plan = '1. wait(0.5, "slow")\n2. fail("boom")\n3. wait(0.01, "$2")\n4. join()'
    runs = await Executor(tools(log), on_failure="cancel").run(parse_plan(plan, tools()))
    assert runs[1].status == "cancelled" and log == []  # the slow task never finished
    assert runs[2].status == "failed" and runs[3].status in ("cancelled", "skipped")


async def test_side_effects_run_once_per_run_and_results_replay_on_resume(tmp_path: Path) -> None:
    registry = tools()
    plan = parse_plan('1. charge(5)\n2. wait(0.01, "after $1")\n3. join()', registry)
    memo: dict = {}
    record = SqliteCallRecord(tmp_path / "calls.db")
    token = use_ledger(CallLedger(record=record))
    await Executor(registry, key="r0", memo=memo).run(plan)
    again = await Executor(registry, key="r1", memo=memo).run(plan)  # a replan repeating it
    reset_ledger(token)
    assert registry.charges == [5] and again[1].replayed  # type: ignore[attr-defined]
    record.close()
    record = SqliteCallRecord(tmp_path / "calls.db")  # a resumed run, new process state
    token = use_ledger(CallLedger(record=record))
    resumed = await Executor(registry, key="r0").run(plan)
    reset_ledger(token)
    record.close()
    assert registry.charges == [5] and all(resumed[i].replayed for i in (1, 2))  # type: ignore[attr-defined]
    assert resumed[2].result == "after charged 5"


async def test_bad_arguments_at_run_time_fail_the_task_with_the_reason() -> None:
    runs = await Executor(tools()).run(parse_plan('1. wait("soon")\n2. join()', tools()))
    assert runs[1].status == "failed" and "bad arguments for wait: seconds" in runs[1].error
    with pytest.raises(ToolError):
        await tools().call("fail", {"reason": "x"})


async def test_every_task_is_a_budgeted_execute_tool_span(spans) -> None:
    spans.clear()
    registry = tools()
    plan = parse_plan(
        '1. wait(0.01, "a")\n2. wait(0.01, "b")\n3. wait(0.5, "$1 $2")\n4. join()', registry
    )
    ledger = CallLedger(budget=Budget(max_tool_calls=2))
    token = use_ledger(ledger)
    try:
        with pytest.raises(BudgetExceeded, match="2 tool_calls used, the limit is 2"):
            await Executor(registry).run(plan)
    finally:
        reset_ledger(token)
    executed = [s for s in spans.get_finished_spans() if s.name == "execute_tool wait"]
    assert len(executed) == 2 and ledger.tool_calls == 2
    assert all(s.attributes["gen_ai.tool.name"] == "wait" for s in executed)
    assert {s.attributes["gen_ai.operation.name"] for s in executed} == {"execute_tool"}
