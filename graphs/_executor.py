"""The task-fetching unit: runs a plan's tool calls as a DAG, event-driven.

Each task waits on its dependencies' completion futures and starts the moment the
last one resolves, also while the plan is still streaming in; there is no polling
and no level-by-level barrier. A task whose dependency failed is skipped with that
reason; with ``on_failure="cancel"`` the first failure also cancels everything still
running or waiting. Every tool call goes through the run's ledger
(``CallLedger.tool``): it is budgeted, traced and kept in the call record, so a
resumed run replays it instead of calling the tool again; a tool with
``side_effects`` is never called twice with the same arguments in one run (a replan
that repeats it gets the first result). Every task's times (emitted, ready, started,
ended; seconds from the start) are recorded for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from concilium.agents import current_ledger
from concilium.tools import Task, ToolError, ToolRegistry, resolve


@dataclass
class TaskRun:
    """What happened to one task."""

    index: int
    tool: str
    deps: tuple[int, ...]
    args: Any = None
    status: str = "pending"  # ok | failed | skipped | cancelled
    result: Any = None
    error: str | None = None
    emitted: float | None = None
    ready: float | None = None
    started: float | None = None
    ended: float | None = None
    replayed: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["result"] = _jsonable(self.result)
        out["args"] = _jsonable(self.args)
        return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class Executor:
    """Runs tasks from an iterable or an async iterable (a streaming planner).

    Args:
        registry: the tools tasks may name.
        on_failure: ``"skip_dependents"`` (default) or ``"cancel"`` (stop everything).
        key: names this execution in the call record (stable across a resume).
        memo: side-effecting calls already made, shared across replans; it matters
            outside a run only (a run's call record already keeps them).
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        on_failure: str = "skip_dependents",
        key: str = "plan",
        memo: dict[str, Any] | None = None,
    ):
        if on_failure not in ("skip_dependents", "cancel"):
            raise ValueError(
                f"on_failure must be 'skip_dependents' or 'cancel', got {on_failure!r}"
            )
        self.registry = registry
        self.on_failure = on_failure
        self.key = key
        self.memo = memo if memo is not None else {}
        self.runs: dict[int, TaskRun] = {}
        self._finished: dict[int, asyncio.Event] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancelled = False
        self._fatal: Exception | None = None
        self._reader: asyncio.Task[None] | None = None
        self._origin = 0.0

    def _now(self) -> float:
        return round(time.perf_counter() - self._origin, 6)

    async def run(
        self, tasks: Iterable[Task] | AsyncIterable[Task], origin: float | None = None
    ) -> dict[int, TaskRun]:
        """Run every task; returns their records by index (join included).

        Raises:
            BudgetExceeded: (or any error that is not a tool's own failure) after
                cancelling the other tasks.
        """
        self._origin = time.perf_counter() if origin is None else origin
        try:
            if isinstance(tasks, AsyncIterable):
                await self._read_stream(tasks)
            else:
                for task in tasks:
                    self._start(task)
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        finally:  # the caller was cancelled, or the stream failed: stop what is running
            for t in self._tasks.values():
                t.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._fatal is not None:
            raise self._fatal
        return self.runs

    async def _read_stream(self, tasks: AsyncIterable[Task]) -> None:
        """Start tasks as the plan streams in. A fatal error (the budget, say) stops
        the reading at once instead of when the planner finishes writing."""
        self._reader = asyncio.ensure_future(self._start_each(tasks))
        try:
            await self._reader
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._fatal is None or (current is not None and current.cancelling()):
                raise

    async def _start_each(self, tasks: AsyncIterable[Task]) -> None:
        async for task in tasks:
            self._start(task)

    def _start(self, task: Task) -> None:
        record = TaskRun(task.index, task.tool, task.deps, emitted=self._now())
        self.runs[task.index] = record
        self._finished[task.index] = asyncio.Event()
        self._tasks[task.index] = asyncio.ensure_future(self._execute(task, record))

    async def _execute(self, task: Task, record: TaskRun) -> None:
        try:
            for d in task.deps:
                await self._finished[d].wait()
            record.ready = self._now()
            if self._cancelled:
                record.status, record.error = "cancelled", "cancelled after an earlier task failed"
                return
            bad = [d for d in task.deps if self.runs[d].status != "ok"]
            if bad:
                record.status = "skipped"
                record.error = f"task {bad[0]} ({self.runs[bad[0]].tool}) did not succeed: {self.runs[bad[0]].error}"
                return
            if task.is_join:
                record.status, record.started, record.ended = "ok", record.ready, record.ready
                return
            await self._call(task, record)
        except asyncio.CancelledError:
            record.status = "cancelled"
            record.error = record.error or "cancelled after an earlier task failed"
        except Exception as exc:  # not the tool's failure (that is a ToolError): the budget, say
            record.status, record.error = "failed", str(exc)
            self._fatal = self._fatal or exc
            self._cancel_others(task.index)
            if self._reader is not None:
                self._reader.cancel()
        finally:
            self._finished[task.index].set()

    async def _call(self, task: Task, record: TaskRun) -> None:
        results = {d: self.runs[d].result for d in task.deps}
        record.args = args = resolve(task.args, results, task.deps)
        tool = self.registry.get(task.tool)
        memo_key = (
            json.dumps([task.tool, _jsonable(args)], sort_keys=True, default=str)
            if tool.side_effects
            else ""
        )
        record.started = self._now()
        try:
            if memo_key in self.memo:
                record.result, record.replayed = self.memo[memo_key], True
            else:
                record.result, record.replayed = await current_ledger().tool(
                    tool, args, key=f"{self.key}/{task.index}"
                )
            record.status = "ok"
        except ToolError as exc:
            record.status, record.error = "failed", str(exc)
            if self.on_failure == "cancel":
                self._cancel_others(task.index)
            return
        finally:
            record.ended = self._now()
        if memo_key:
            self.memo[memo_key] = record.result

    def _cancel_others(self, failed: int) -> None:
        self._cancelled = True
        for index, t in self._tasks.items():
            if index != failed and not t.done():
                t.cancel()
