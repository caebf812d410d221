"""Event-driven DAG scheduling, and the LLMCompiler plan executor built on it.

``run_dag`` is the one DAG scheduler of the runtime (the plan executor,
``division_of_thoughts`` and ``graph_of_thoughts`` run on it): a node is an async
function of its parents' results and is called the moment the last of them is done,
also while the nodes are still streaming in; there is no polling and no
level-by-level barrier. The nodes are tasks of one ``task_group`` (the TaskGroup
under ``RunContext.gather``): the first failure cancels the nodes in flight (and the
reading of a stream) and is raised as itself. Results come back in the order the
nodes were given (plan order), whatever order they ended in.

``Executor``, the task-fetching unit, runs a plan's tool calls as such a DAG. A task
whose dependency failed is skipped with that reason; with ``on_failure="cancel"``
the first failure also cancels everything still running or waiting. Every tool call
is the kit's ``use_tool``, keyed ``<path>/<tool>/<key>/<index>`` as any pattern's
tool call is: it is budgeted, traced and kept in the call record, so a resumed run
replays it instead of calling the tool again; a
tool with ``side_effects`` is never called twice with the same arguments in one run
(a replan that repeats it gets the first result). Every task's times (emitted,
ready, started, ended; seconds from the start) are recorded for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from concilium._errors import GraphError
from concilium.tools import ToolError, ToolRegistry
from concilium.tools.plans import Task, resolve

from ._context import current_run, task_group
from ._kit import use_tool

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class DagNode(Generic[K, T]):
    """One node of a DAG for ``run_dag``.

    Attributes:
        key: the node's name, which other nodes list in their ``after``.
        run: called with the parents' results (by key, in ``after`` order) once the
            last of them is done; returns the node's result.
        after: the keys of its parents.
    """

    key: K
    run: Callable[[Mapping[K, T]], Awaitable[T]]
    after: tuple[K, ...] = ()


async def run_dag(nodes: Iterable[DagNode[K, T]] | AsyncIterable[DagNode[K, T]]) -> dict[K, T]:
    """Run a DAG event-driven; its results by key, in the order the nodes were given.

    A node starts the moment its last parent ends (one without parents at once), in a
    copy of the caller's context. A list of nodes may be in any order and is checked
    before anything runs. An async iterable is read while it is written (a streaming
    planner): each node starts as soon as it has arrived and its parents are done, so
    it may name only parents that arrived before it. The first failure cancels the
    nodes still running or waiting and the reading, and is raised as itself (later
    ones are added to it as a note).

    Raises:
        GraphError: a key given twice, a parent that is not a node, or a cycle.

    Example:
        >>> import asyncio
        >>> async def one(parents):
        ...     return 1
        >>> async def more(parents):
        ...     return sum(parents.values()) + 1
        >>> dag = [DagNode("c", more, ("a", "b")), DagNode("a", one), DagNode("b", more, ("a",))]
        >>> asyncio.run(run_dag(dag))
        {'c': 4, 'a': 1, 'b': 2}
    """
    checked = None if isinstance(nodes, AsyncIterable) else _checked(list(nodes))
    async with task_group() as group:
        dag = _Dag[K, T](group)
        if checked is not None:
            for node in checked:
                dag.add(node)
        elif isinstance(nodes, AsyncIterable):
            async for node in nodes:
                dag.add(dag.arrived(node))
    return {key: dag.results[key] for key in dag.nodes}


class _Dag(Generic[K, T]):
    """The nodes of one ``run_dag``: each waits for a count of parents and is started
    by the parent that brings the count to zero."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self.group = group
        self.context = contextvars.copy_context()
        self.nodes: dict[K, DagNode[K, T]] = {}
        self.results: dict[K, T] = {}
        self.waiting: dict[K, int] = {}  # parents not yet done
        self.children: defaultdict[K, list[K]] = defaultdict(list)

    def arrived(self, node: DagNode[K, T]) -> DagNode[K, T]:
        """A streamed node, checked against the ones that came before it."""
        if node.key in self.nodes:
            raise _given_twice(node)
        if node.key in node.after:
            raise GraphError(f"DAG node {node.key!r} depends on itself; remove it from its after")
        for parent in node.after:
            if parent not in self.nodes:
                raise _unknown(node, parent, self.nodes, "an earlier node (a streamed DAG "
                               "gives each node after its parents)")  # fmt: skip
        return node

    def add(self, node: DagNode[K, T]) -> None:
        self.nodes[node.key] = node
        parents = [p for p in dict.fromkeys(node.after) if p not in self.results]
        self.waiting[node.key] = len(parents)
        for parent in parents:
            self.children[parent].append(node.key)
        if not parents:
            self._start(node)

    def _start(self, node: DagNode[K, T]) -> None:
        self.group.create_task(self._run(node), context=self.context.copy())

    async def _run(self, node: DagNode[K, T]) -> None:
        self.results[node.key] = await node.run({p: self.results[p] for p in node.after})
        for key in self.children.pop(node.key, []):
            self.waiting[key] -= 1
            if not self.waiting[key]:
                self._start(self.nodes[key])


def _checked(nodes: list[DagNode[K, T]]) -> list[DagNode[K, T]]:
    """The nodes, once their keys are unique, their parents are nodes and no node
    depends on itself through others."""
    keys: dict[K, DagNode[K, T]] = {}
    for node in nodes:
        if node.key in keys:
            raise _given_twice(node)
        keys[node.key] = node
    for node in nodes:
        for parent in node.after:
            if parent not in keys:
                raise _unknown(node, parent, keys, "a node")
    cycle = _cycle(keys)
    if cycle:
        raise GraphError(f"the DAG has a cycle: {' -> '.join(map(repr, cycle))} (each depends "
                         "on the next); remove one of these dependencies")  # fmt: skip
    return nodes


def _cycle(nodes: Mapping[K, DagNode[K, T]]) -> list[K]:
    """A cycle among ``nodes`` (its first key repeated at the end), or ``[]``."""
    waiting = {key: len(set(node.after)) for key, node in nodes.items()}
    children: defaultdict[K, list[K]] = defaultdict(list)
    for key, node in nodes.items():
        for parent in set(node.after):
            children[parent].append(key)
    ready = [key for key, count in waiting.items() if not count]
    while ready:
        for child in children[ready.pop()]:
            waiting[child] -= 1
            if not waiting[child]:
                ready.append(child)
    left = [key for key, count in waiting.items() if count]
    if not left:
        return []
    path: list[K] = []  # every node left has a parent left: follow parents until one repeats
    key = left[0]
    while key not in path:
        path.append(key)
        key = next(p for p in nodes[key].after if waiting[p])
    return [*path[path.index(key) :], key]


def _given_twice(node: DagNode[K, Any]) -> GraphError:
    return GraphError(f"DAG node {node.key!r} is given twice; keys must be unique")


def _unknown(node: DagNode[K, Any], parent: K, known: Iterable[K], what: str) -> GraphError:
    names = {str(k): k for k in known}
    close = difflib.get_close_matches(str(parent), names, n=1)
    hint = f"did you mean {names[close[0]]!r}?" if close else f"the nodes: {list(names.values())}"
    return GraphError(f"DAG node {node.key!r} depends on {parent!r}, which is not {what}; {hint}")


# -- the plan executor ----------------------------------------------------------


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


class _Halt(Exception):
    """A tool failed under ``on_failure="cancel"``: stops the plan, not the run."""


class Executor:
    """Runs tasks from an iterable or an async iterable (a streaming planner).

    Args:
        registry: the tools tasks may name.
        on_failure: ``"skip_dependents"`` (default) or ``"cancel"`` (stop everything).
        key: names this execution among the calls of the node it runs in, stable
            across a resume (a replan's own, ``plan/r1``): each task's call is keyed
            ``<node path>/<tool>/<key>/<task index>``.
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
        self._origin = 0.0

    def _now(self) -> float:
        return round(time.perf_counter() - self._origin, 6)

    async def run(
        self, tasks: Iterable[Task] | AsyncIterable[Task], origin: float | None = None
    ) -> dict[int, TaskRun]:
        """Run every task; returns their records by index, in plan order (join included).

        With ``on_failure="cancel"`` the rest of a streamed plan is still read and
        recorded as cancelled, when iterating ``tasks`` again goes on where the
        cancelled read stopped (a queue's reader does; a spent generator reads nothing).

        Raises:
            BudgetExceeded: (or any error that is not a tool's own failure) after
                cancelling the other tasks and the reading of the plan.
        """
        self._origin = time.perf_counter() if origin is None else origin
        try:
            if isinstance(tasks, AsyncIterable):
                await run_dag(self._node(task) async for task in tasks)
            else:
                await run_dag([self._node(task) for task in tasks])
        except _Halt:
            if isinstance(tasks, AsyncIterable):
                async for task in tasks:
                    self._record(task)
        finally:  # what was cut short (a failure, or the caller gave up) is cancelled
            for record in self.runs.values():
                if record.status == "pending":
                    record.status, record.error = (
                        "cancelled",
                        "cancelled after an earlier task failed",
                    )
        return self.runs

    def _record(self, task: Task) -> TaskRun:
        record = self.runs[task.index] = TaskRun(
            task.index, task.tool, task.deps, emitted=self._now()
        )
        return record

    def _node(self, task: Task) -> DagNode[int, TaskRun]:
        return DagNode(task.index, partial(self._execute, task, self._record(task)), task.deps)

    async def _execute(
        self, task: Task, record: TaskRun, parents: Mapping[int, TaskRun]
    ) -> TaskRun:
        record.ready = self._now()
        bad = [p for p in parents.values() if p.status != "ok"]
        if bad:
            record.status = "skipped"
            record.error = f"task {bad[0].index} ({bad[0].tool}) did not succeed: {bad[0].error}"
        elif task.is_join:
            record.status, record.started, record.ended = "ok", record.ready, record.ready
        else:
            try:
                await self._call(task, record, parents)
            except (
                Exception
            ) as exc:  # not the tool's failure (that is a ToolError): the budget, say
                record.status, record.error = "failed", str(exc)
                raise
            if record.status == "failed" and self.on_failure == "cancel":
                raise _Halt  # the DAG cancels the tasks in flight
        return record

    async def _call(self, task: Task, record: TaskRun, parents: Mapping[int, TaskRun]) -> None:
        results = {d: run.result for d, run in parents.items()}
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
                reply = await use_tool(current_run(), tool, args, f"{self.key}/{task.index}")
                record.result, record.replayed = reply.result, reply.replayed
            record.status = "ok"
        except ToolError as exc:
            record.status, record.error = "failed", str(exc)
            return
        finally:
            record.ended = self._now()
        if memo_key:
            self.memo[memo_key] = record.result
