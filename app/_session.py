"""``Session``: one backend's resources, the workflows bound to it, and their runs.

Every front-end (``run``, ``eval``, ``serve api``, ``serve mcp``, ``ui``, ``research``,
the benchmarks) goes the same way: build a workflow once (``load``), bind it to the
session's backend, run it as often as it likes, close the session. Binding starts
what the backend needs the first time it is needed and keeps it for the session (one
simulated server per distinct ``simulate:`` section, one embedded engine for every
workflow) and hands the built workflow its endpoints in memory: nothing is rebuilt or
read again. The session, not a run, owns what runs share (servers, the engine, the
HTTP connections, the state file) and closes it once, at the end. The engine it holds
is supervised: one that dies is restarted on its port while the runs' calls wait
(``docs/engine.md#supervision``).

Example:
    >>> import asyncio
    >>> from concilium.app import Session, load
    >>> async def main():
    ...     async with Session("sim") as session:
    ...         result = await session.run(load("examples/self_consistency.yaml"), "What is 6 * 7?")
    ...         return result.calls >= 1
    >>> asyncio.run(main())
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from concilium.agents import Endpoints, Message, aclose
from concilium.agents.sim import SimConfig
from concilium.graphs import RunResult, StateStore, run
from concilium.graphs.workflows import Workflow

from ._backend import Backend

__all__ = ["Session"]

T = TypeVar("T")
Log = Callable[[str], None]


class Session:
    """A backend's servers, the workflows bound to it, and the runs on it.

    Args:
        backend: ``"sim"``, ``"local"``, a URL, a ``Backend``, or ``None`` (each
            model's own ``api_base``).
        state: a SQLite file every run of the session checkpoints to and records its
            calls in (``concilium eval``'s results folder), opened once.
        log: receives the embedded engine's start-up lines.

    Use it as an async context manager; leaving it stops every server it started and
    closes the HTTP connections its runs shared.
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        state: str | Path | None = None,
        log: Log | None = None,
    ) -> None:
        self.backend = Backend.parse(backend)
        self.log = log
        self.starts = 0  # servers or engines started (a test can count them)
        self._state_path = state
        self.store: StateStore | None = None
        self._held: dict[str, asyncio.Future[Any]] = {}
        self._lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._keepers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Session:
        if self._state_path is not None:
            self.store = await StateStore(self._state_path).__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ binding

    async def bind(self, workflow: Workflow) -> Workflow:
        """``workflow`` with its model calls sent to this session's backend.

        The first bind starts what the backend needs (kept for the session); the
        workflow itself is not rebuilt: its graph, agents and tools are the same.
        """
        kind = self.backend.kind
        if kind == "models":
            return workflow
        if kind == "url":
            assert self.backend.url is not None
            return workflow.bind(Endpoints(self.backend.url))
        if kind == "sim":
            config = workflow.sim or SimConfig()
            key = "sim:" + json.dumps(config.model_dump(mode="json"), sort_keys=True)
            sim = await self._hold(key, self._sim_server, config)
            return workflow.bind(Endpoints(sim.url))
        engine = await self._hold("engine", self._engine)
        # the engine serves one model under one name, whatever a workflow calls its models
        return workflow.bind(Endpoints(list(engine.urls), served_name=engine.names[0]))

    @staticmethod
    def _sim_server(config: SimConfig) -> contextlib.AbstractAsyncContextManager[Any]:
        from concilium.serving import SimServer

        return SimServer(config)

    def _engine(self) -> contextlib.AbstractAsyncContextManager[Any]:
        from concilium.serving.engine import local_engine

        return local_engine(log=self.log)

    async def _hold(
        self, key: str, open_: Callable[..., contextlib.AbstractAsyncContextManager[T]], *args: Any
    ) -> T:
        """The resource ``key``, started once by a keeper task that holds it until the
        session closes (a context is left in the task that entered it); a start that
        failed is tried again by the next bind."""
        async with self._lock:
            held = self._held.get(key)
            if held is None or (held.done() and held.exception() is not None):
                held = self._held[key] = asyncio.get_running_loop().create_future()
                self.starts += 1
                self._keepers.append(asyncio.create_task(self._keep(held, open_(*args))))
        return await asyncio.shield(held)

    async def _keep(
        self, ready: asyncio.Future[Any], resource: contextlib.AbstractAsyncContextManager[Any]
    ) -> None:
        try:
            async with resource as value:
                ready.set_result(value)
                await self._closing.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            # a server that failed after it started fails the runs that use it

    # ------------------------------------------------------------------ running

    async def run(
        self, workflow: Workflow, input: str | Sequence[Message], **options: Any
    ) -> RunResult:
        """Bind ``workflow`` (if not bound yet) and run it on ``input``.

        ``options`` are ``concilium.graphs.run``'s; the workflow's own budget and
        fingerprint (its spec, overrides included) are the defaults, and the
        session's state file is used when it has one.
        """
        bound = workflow if workflow.endpoints is not None else await self.bind(workflow)
        options.setdefault("budget", workflow.budget)
        options.setdefault("fingerprint", workflow.fingerprint)
        if self.store is not None and "state_path" not in options:
            options.setdefault("store", self.store)
        return await run(bound.graph, input, **options)

    async def aclose(self) -> None:
        """Stop every server this session started and close the shared connections."""
        self._closing.set()
        for keeper in self._keepers:
            with contextlib.suppress(Exception):
                await keeper
        self._keepers.clear()
        self._held.clear()
        if self.store is not None:
            await self.store.__aexit__(None, None, None)
            self.store = None
        await aclose()
