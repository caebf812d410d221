"""The shared DAG scheduler (``run_dag``): a node starts when its parents end, not at a
wave barrier; a failure cancels the nodes in flight; results in plan order; a bad DAG
is a clear error. The event-driven executor on it: every task starts when its last
dependency ends, also while the plan streams in; failures skip dependents or cancel;
results replay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from concilium import BudgetExceeded, GraphError
from concilium.agents import Budget
from concilium.agents.ledger import CallLedger, SqliteCallRecord, reset_ledger, use_ledger
from concilium.graphs import DagNode, Executor, run_dag
from concilium.tools import Tool, ToolError, ToolRegistry
from concilium.tools.plans import PlanParser, Task, parse_plan


async def until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within_s`` seconds saying what."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, f"timed out after {within_s} s waiting for {what}"
        await asyncio.sleep(0.005)


# -- run_dag ----------------------------------------------------------------------


def const(value: str) -> Callable[[Mapping[str, str]], Awaitable[str]]:
    async def run(parents: Mapping[str, str]) -> str:
        return value + "".join(parents.values())

    return run


async def test_a_child_starts_when_its_parents_end_not_at_a_wave_barrier() -> None:
    """``b`` (wave 1) ends only once ``c`` (wave 2, a child of ``a``) has started: a
    scheduler that waited for the whole first wave would never finish."""
    c_started = asyncio.Event()

    async def b(parents: Mapping[str, str]) -> str:
        await c_started.wait()
        return "b"

    async def c(parents: Mapping[str, str]) -> str:
        c_started.set()
        return "c sees " + parents["a"]

    async with asyncio.timeout(10):  # a barrier would hang here; this fails it instead
        results = await run_dag(
            [DagNode("a", const("a")), DagNode("b", b), DagNode("c", c, ("a",))]
        )
    assert results == {"a": "a", "b": "b", "c": "c sees a"}


async def test_a_streamed_node_starts_before_the_stream_ends() -> None:
    first_ran = asyncio.Event()

    async def first(parents: Mapping[str, str]) -> str:
        first_ran.set()
        return "1"

    async def stream() -> AsyncIterator[DagNode[str, str]]:
        yield DagNode("1", first)
        await first_ran.wait()  # the next node is written only once the first has run
        yield DagNode("2", const("2+"), ("1",))

    async with asyncio.timeout(10):
        assert await run_dag(stream()) == {"1": "1", "2": "2+1"}


async def test_results_come_back_in_plan_order_whatever_order_they_end_in() -> None:
    gates = {key: asyncio.Event() for key in "abc"}
    ended: list[str] = []

    def gated(key: str, then: str | None) -> Callable[[Mapping[str, str]], Awaitable[str]]:
        async def run(parents: Mapping[str, str]) -> str:
            await gates[key].wait()
            ended.append(key)
            if then is not None:
                gates[then].set()
            return key.upper()

        return run

    gates["c"].set()  # c ends first, then opens b, which opens a
    nodes = [DagNode("a", gated("a", None)), DagNode("b", gated("b", "a")),
             DagNode("c", gated("c", "b")), DagNode("d", const("d:"), ("c", "a"))]  # fmt: skip
    async with asyncio.timeout(10):
        results = await run_dag(nodes)
    assert ended == ["c", "b", "a"]
    # the parents' results reach a node in its own order of parents
    assert list(results.items()) == [("a", "A"), ("b", "B"), ("c", "C"), ("d", "d:CA")]


async def test_a_failure_cancels_the_nodes_in_flight_and_is_raised_as_itself() -> None:
    slow_started = asyncio.Event()
    cancelled: list[str] = []

    async def slow(parents: Mapping[str, str]) -> str:
        slow_started.set()
        try:
            await asyncio.Event().wait()  # never set: only a cancellation ends it
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "slow"

    async def boom(parents: Mapping[str, str]) -> str:
        await slow_started.wait()
        raise ValueError("boom")

    async def never(parents: Mapping[str, str]) -> str:
        raise AssertionError("a child of a cancelled node ran")

    with pytest.raises(ValueError, match="boom"):  # itself, not an ExceptionGroup
        await run_dag(
            [DagNode("slow", slow), DagNode("boom", boom), DagNode("after", never, ("slow",))]
        )
    assert cancelled == ["slow"]


async def test_a_failure_stops_the_reading_of_a_stream() -> None:
    closed: list[str] = []

    async def boom(parents: Mapping[str, str]) -> str:
        raise ValueError("boom")

    async def stream() -> AsyncIterator[DagNode[str, str]]:
        try:
            yield DagNode("boom", boom)
            await asyncio.Event().wait()  # a planner that is still writing
        finally:
            closed.append("stream")

    with pytest.raises(ValueError, match="boom"):
        await run_dag(stream())
    assert closed == ["stream"]


async def test_a_cycle_an_unknown_parent_or_a_repeated_key_is_a_clear_error() -> None:
    ran: list[str] = []

    async def record(parents: Mapping[str, str]) -> str:
        ran.append("ran")
        return ""

    cycle = [DagNode("free", record), DagNode("a", record, ("b",)), DagNode("b", record, ("a",))]
    with pytest.raises(
        GraphError, match=r"the DAG has a cycle: 'a' -> 'b' -> 'a' \(each depends on the next\)"
    ):
        await run_dag(cycle)
    assert ran == []  # checked before anything runs
    with pytest.raises(
        GraphError, match="node 'b' depends on 'sort', which is not a node; did you mean 'sort1'"
    ):
        await run_dag([DagNode("sort1", record), DagNode("b", record, ("sort",))])
    with pytest.raises(GraphError, match="node 'a' is given twice"):
        await run_dag([DagNode("a", record), DagNode("a", record)])

    async def later_parent() -> AsyncIterator[DagNode[str, str]]:
        yield DagNode("a", record, ("b",))
        yield DagNode("b", record)

    with pytest.raises(GraphError, match="depends on 'b', which is not an earlier node"):
        await run_dag(later_parent())


# -- the plan executor --------------------------------------------------------------


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


class QueuedPlan:
    """A plan parsed into a queue as it is written, read as plan_and_execute's stream
    is: a read cut short by a cancellation loses nothing, and the end stays readable."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.parser = PlanParser(registry)
        self.queue: asyncio.Queue[Task | None] = asyncio.Queue()

    def write(self, text: str) -> None:
        for task in self.parser.feed(text):
            self.queue.put_nowait(task)

    def end(self) -> None:
        for task in self.parser.close():
            self.queue.put_nowait(task)
        self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Task]:
        while (task := await self.queue.get()) is not None:
            yield task
        self.queue.put_nowait(None)


@pytest.mark.parametrize("failed_while_streaming", [True, False])
async def test_cancel_policy_records_the_rest_of_a_streamed_plan(
    failed_while_streaming: bool,
) -> None:
    log: list[str] = []
    registry = tools(log)
    plan, executor = QueuedPlan(registry), Executor(registry, on_failure="cancel")
    plan.write('1. wait(5, "slow")\n2. fail("boom")\n')
    if not failed_while_streaming:
        plan.write('3. wait(0.01, "$2")\n4. join()')
        plan.end()
    running = asyncio.ensure_future(executor.run(plan))
    if failed_while_streaming:  # the rest is written after task 2 failed
        await until(
            lambda: 2 in executor.runs and executor.runs[2].status == "failed", "task 2 to fail"
        )
        plan.write('3. wait(0.01, "$2")\n4. join()')
        plan.end()
    async with asyncio.timeout(10):
        runs = await running
    assert [runs[i].status for i in (1, 2, 3, 4)] == [
        "cancelled",
        "failed",
        "cancelled",
        "cancelled",
    ]
    assert log == []  # the slow task never finished


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
