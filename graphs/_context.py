"""The run context a node sees: run id, ledger, where it is, an event sink, and
the one way to run calls concurrently inside a node (``gather`` / ``map``, and
``task_group`` for tasks started while the node does something else).

It travels in context variables, which asyncio copies into every task LangGraph
starts, so each branch sees its own node path while sharing the run's ledger.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from concilium.agents import task_group
from concilium.agents.ledger import CallLedger, current_ledger

from ._events import Event

T = TypeVar("T")
Item = TypeVar("Item")

_path: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "concilium_path", default=()
)


@dataclass
class RunContext:
    """What a node may use besides its state.

    Attributes:
        run_id: the run's id (also the checkpoint thread id).
        workflow: the top-level graph's name.
        ledger: counts and records every model call of the run.
    """

    run_id: str
    workflow: str
    ledger: CallLedger
    sink: Callable[[Event], None] | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def path(self) -> str:
        """Where the current code runs: node names from the top, ``/``-joined."""
        return "/".join(_path.get())

    def key(self, *parts: object) -> str:
        """A call key unique within the run, stable across a resume."""
        return "/".join([*_path.get(), *(str(p) for p in parts)])

    def emit(self, event: Event) -> None:
        """Send a progress event to the run's listener, with ``path`` and ``t``
        (seconds since the run started) filled in."""
        if self.sink is not None:
            event.setdefault("path", self.path)
            event.setdefault("t", round(time.perf_counter() - self.started, 4))
            self.sink(event)

    async def gather(self, *awaitables: Awaitable[T]) -> list[T]:
        """Await concurrently; the results in argument order.

        The first failure cancels the siblings still running (their HTTP requests
        included) and is raised as itself, not wrapped in an ``ExceptionGroup``, so
        ``except ModelCallError`` works as around a single call. Each task runs in a
        copy of the current context: it sees the node path, so calls keyed with
        ``ask`` inside it are keyed under the node (give each a distinct tag).

        Example:
            >>> import asyncio
            >>> async def square(x):
            ...     await asyncio.sleep(0.01 * (3 - x))
            ...     return x * x
            >>> asyncio.run(current_run().gather(*(square(x) for x in range(3))))
            [0, 1, 4]
        """
        return await gather_all(awaitables)

    async def map(self, fn: Callable[[Item], Awaitable[T]], items: Iterable[Item]) -> list[T]:
        """``fn`` over ``items`` concurrently; the results in ``items`` order. Failure
        and cancellation as in ``gather``: use it for many short calls inside one
        step (judging N candidates); steps of the method that should be visible and
        checkpointed one by one are graph branches (``Branch``) instead.

        Example:
            >>> import asyncio
            >>> async def shout(word):
            ...     return word.upper()
            >>> asyncio.run(current_run().map(shout, ["a", "b"]))
            ['A', 'B']
        """
        return await gather_all([fn(item) for item in items])

    async def map_until(
        self,
        fn: Callable[[Item], Awaitable[T]],
        items: Iterable[Item],
        *,
        stop: Callable[[Sequence[T]], bool],
        parallel: int,
    ) -> list[T]:
        """``fn`` over ``items`` with at most ``parallel`` in flight, until ``stop``
        says enough: for sampling that stops early (adaptive consistency).

        Items start in order as slots free up. After each arrival ``stop`` is asked
        with the results so far; when it says yes, the calls still in flight are
        cancelled (their HTTP requests closed) and drained before this returns.
        Returns the results in arrival order (calls that finish together in
        ``items`` order), when ``stop`` says so or the items run out. Failure and
        cancellation as in ``gather``.

        Example:
            >>> import asyncio
            >>> async def draw(i):
            ...     await asyncio.sleep(0.01 * i)
            ...     return i
            >>> enough = lambda got: len(got) == 3
            >>> asyncio.run(current_run().map_until(draw, range(100), stop=enough, parallel=4))
            [0, 1, 2]
        """
        return await map_until_all(fn, items, stop=stop, parallel=parallel)

    def task_group(self) -> AbstractAsyncContextManager[asyncio.TaskGroup]:
        """An ``asyncio.TaskGroup`` for tasks a node starts while it does something
        else (a tool call started while the model's reply still streams): leaving
        the block waits for them. Failure and cancellation as in ``gather``: a
        failing task or a failing block cancels every task still running, and the
        first failure is raised as itself, not wrapped in an ``ExceptionGroup``.

        Example:
            >>> import asyncio
            >>> async def later(x):
            ...     await asyncio.sleep(0.01)
            ...     return x
            >>> async def node():
            ...     async with current_run().task_group() as group:
            ...         started = [group.create_task(later(x)) for x in "ab"]
            ...     return [task.result() for task in started]
            >>> asyncio.run(node())
            ['a', 'b']
        """
        return task_group()


_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "concilium_run", default=None
)


def current_run() -> RunContext:
    """The context of the run in progress (a bare one outside ``run``)."""
    ctx = _run.get()
    if ctx is None:
        ctx = RunContext(run_id="adhoc", workflow="adhoc", ledger=current_ledger())
    return ctx


@contextmanager
def run_scope(ctx: RunContext) -> Iterator[RunContext]:
    token = _run.set(ctx)
    try:
        yield ctx
    finally:
        _run.reset(token)


def current_path() -> str:
    """The node path of the running code, ``/``-joined (``RunContext.path``)."""
    return "/".join(_path.get())


@contextmanager
def node_scope(*names: str) -> Iterator[None]:
    token = _path.set(_path.get() + names)
    try:
        yield
    finally:
        _path.reset(token)


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run the awaitables as tasks of one ``task_group``; the results in order. On
    failure the group cancels the rest and waits for them to finish; then the first
    exception raised is re-raised as itself (later ones, raised while the siblings
    were being cancelled, are added to it as a note)."""
    pending = list(awaitables)
    if not pending:
        return []
    async with task_group() as group:
        tasks = [group.create_task(_as_coroutine(a)) for a in pending]
    return [task.result() for task in tasks]


async def map_until_all(
    fn: Callable[[Item], Awaitable[T]],
    items: Iterable[Item],
    *,
    stop: Callable[[Sequence[T]], bool],
    parallel: int,
) -> list[T]:
    """``RunContext.map_until`` on one ``task_group``: at most ``parallel`` tasks,
    topped up in ``items`` order; at the stop the rest are cancelled and the group
    waits for them; a failure cancels the rest and is re-raised as itself."""
    if parallel < 1:
        raise ValueError(f"map_until needs parallel >= 1, got {parallel}")
    todo = enumerate(items)
    got: list[T] = []
    running: dict[asyncio.Task[T], int] = {}
    async with task_group() as group:
        while True:
            for i, item in islice(todo, parallel - len(running)):
                running[group.create_task(_as_coroutine(fn(item)))] = i
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            if _collect(done, running, got, stop):
                break
        for task in running:  # the stop: cancel the rest; leaving the group drains them
            task.cancel()
    return got


def _collect(
    done: Iterable[asyncio.Task[T]],
    running: dict[asyncio.Task[T], int],
    got: list[T],
    stop: Callable[[Sequence[T]], bool],
) -> bool:
    """Move finished tasks to ``got`` in item order; whether ``stop`` said enough."""
    for task in sorted(done, key=running.__getitem__):
        del running[task]
        got.append(task.result())
        if stop(got):
            return True
    return False


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
