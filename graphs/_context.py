"""The run context a node sees: run id, ledger, where it is, and an event sink.

It travels in context variables, which asyncio copies into every task LangGraph
starts, so each branch sees its own node path while sharing the run's ledger.
"""

from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from concilium.agents import CallLedger, current_ledger

Event = dict[str, Any]

_path: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("concilium_path", default=())


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
        """Send a progress event (``type`` plus anything) to the run's listener."""
        if self.sink is not None:
            event.setdefault("path", self.path)
            event.setdefault("t", round(time.perf_counter() - self.started, 4))
            self.sink(event)


_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("concilium_run", default=None)


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


@contextmanager
def node_scope(*names: str) -> Iterator[None]:
    token = _path.set(_path.get() + names)
    try:
        yield
    finally:
        _path.reset(token)
