"""The UI's backend: the embedded engine started once and kept for every run.

``Backend.bind`` starts what a backend needs for the workflows it is given and stops
it on exit. That fits a ``concilium run``; the UI starts many runs, and starting the
embedded engine for each costs minutes. :class:`SharedBackend` starts the engine on
the first run, for the model names of every workflow in the UI's picker, keeps it
until the UI stops, and points each run's workflow at it. The engine serves one
base model under names fixed at launch, so a workflow edited after the start that
names a model the engine does not know is sent to one of the names it does (every
name is the same model). Other backends bind per run as before: a simulated server
takes each workflow's own ``simulate:`` section, a URL costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from concilium.graphs.workflows import Workflow

ApiBase = str | list[str]
Reload = Callable[[str, ApiBase], "Workflow"]


class Binds(Protocol):
    """What the UI needs of a backend (``concilium.serving.Backend`` is one)."""

    @property
    def kind(self) -> str: ...

    def bind(
        self, workflows: Sequence[Workflow], *, reload: Reload = ..., log: Any = ...
    ) -> contextlib.AbstractAsyncContextManager[list[Workflow]]: ...


@dataclass(frozen=True)
class _Engine:
    urls: list[str]
    names: frozenset[str]


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _served(model: str) -> str:
    from concilium.agents import ModelSpec

    return ModelSpec(model).served_name


def load_against(path: str | Path, urls: ApiBase, names: Iterable[str]) -> Workflow:
    """Load the workflow at ``path`` with every model served at ``urls`` under one of
    ``names``: a model whose served name is not among them takes the first name."""
    from concilium.graphs.workflows import build_workflow, load_workflow, parse_workflow

    served = sorted(names)
    file = str(path)
    text = Path(path).read_text("utf-8")
    spec, data, lines = parse_workflow(text, file)
    unknown = {k: e for k, e in spec.models.items() if _served(e.model) not in served}
    if not unknown or not served:
        return load_workflow(path, api_base=urls)
    for key, entry in unknown.items():
        prefix = entry.model[: len(entry.model) - len(_served(entry.model))]
        spec.models[key] = entry.model_copy(update={"model": prefix + served[0]})
    return build_workflow(spec, file=file, lines=lines, data=data, api_base=urls)


class SharedBackend:
    """A backend whose embedded engine (``--backend local``) starts once for the UI.

    Args:
        backend: the ``--backend`` value (``concilium.serving.Backend``).
        files: the workflow files in the UI's picker: the engine answers to the
            model names they use.
        log: receives the engine's start-up lines.

    Use it as an async context manager (or call :meth:`aclose`): leaving it stops
    the engine.

    Example:
        >>> import asyncio
        >>> from concilium.serving import Backend
        >>> async def demo():
        ...     async with SharedBackend(Backend.parse(None), []) as shared:
        ...         async with shared.bind([]) as bound:
        ...             return bound, shared.binds
        >>> asyncio.run(demo())
        ([], 1)
    """

    def __init__(
        self,
        backend: Binds,
        files: Iterable[str | Path],
        *,
        log: Callable[[str], None] | None = None,
    ):
        self.backend = backend
        self.files = [str(f) for f in files]
        self.log = log
        self.binds = 0  # times the backend was bound: once for the engine, per run otherwise
        self._lock = asyncio.Lock()
        self._engine: asyncio.Future[_Engine] | None = None
        self._stop = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, backend: Binds | None, files: Iterable[str | Path]) -> SharedBackend | None:
        """``backend`` as is when it is already shared (or None), else shared over ``files``."""
        if backend is None or isinstance(backend, SharedBackend):
            return backend
        return cls(backend, files)

    @classmethod
    def beside(
        cls, backend: Binds, bound: Sequence[Workflow], files: Iterable[str | Path]
    ) -> SharedBackend:
        """Share an engine someone else started and stops: ``bound`` are workflows
        ``backend.bind`` yielded (``serve api --ui``: the UI's runs go to the API's
        engine instead of starting a second one).

        Example:
            >>> from concilium.serving import Backend
            >>> SharedBackend.beside(Backend.parse("sim"), [], []).binds
            0
        """
        shared = cls(backend, files)
        bases = [m.replicas for wf in bound for m in wf.models.values() if m.replicas]
        if backend.kind == "local" and bases:
            names = frozenset(m.served_name for wf in bound for m in wf.models.values())
            engine: asyncio.Future[_Engine] = asyncio.get_running_loop().create_future()
            engine.set_result(_Engine(list(bases[0]), names))
            shared._engine = engine
        return shared

    @property
    def kind(self) -> str:
        return self.backend.kind

    @contextlib.asynccontextmanager
    async def bind(
        self, workflows: Sequence[Workflow], *, reload: Reload | None = None, log: Any = None
    ) -> AsyncIterator[list[Workflow]]:
        """Yield ``workflows`` bound to the backend (the shared engine for ``local``)."""
        if self.backend.kind != "local":
            self.binds += 1
            kwargs: dict[str, Any] = {} if reload is None else {"reload": reload}
            async with self.backend.bind(workflows, log=log or self.log, **kwargs) as bound:
                yield bound
            return
        engine = await self._shared(workflows)
        yield [load_against(wf.file, engine.urls, engine.names) for wf in workflows]

    async def _shared(self, first: Sequence[Workflow]) -> _Engine:
        async with self._lock:
            if self._engine is None or _failed(self._engine):
                self._engine = asyncio.get_running_loop().create_future()
                self._stop.clear()
                self._keeper = asyncio.create_task(self._keep(self._engine, first))
            engine = self._engine
        return await asyncio.shield(engine)

    def _picker(self, first: Sequence[Workflow]) -> list[Workflow]:
        from concilium.graphs.workflows import load_workflow

        found = {wf.file: wf for wf in first}
        for file in self.files:
            if file not in found:
                with contextlib.suppress(Exception):  # a broken file fails its own run, later
                    found[file] = load_workflow(file)
        return list(found.values())

    async def _keep(self, ready: asyncio.Future[_Engine], first: Sequence[Workflow]) -> None:
        """Hold the backend bound until :meth:`aclose` (its own task: a context is
        left in the task that entered it)."""
        workflows = self._picker(first)
        names = frozenset(m.served_name for wf in workflows for m in wf.models.values())
        bases: list[ApiBase] = []
        by_file = {wf.file: wf for wf in workflows}

        def capture(file: str, api_base: ApiBase) -> Workflow:
            bases.append(api_base)
            return by_file[file]

        try:
            self.binds += 1
            async with self.backend.bind(workflows, reload=capture, log=self.log):
                base = bases[0] if bases else []
                ready.set_result(_Engine([base] if isinstance(base, str) else list(base), names))
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise

    async def aclose(self) -> None:
        """Stop the engine, if one was started."""
        self._stop.set()
        if self._keeper is not None:
            with contextlib.suppress(Exception):
                await self._keeper
            self._keeper = None
        self._engine = None

    async def __aenter__(self) -> SharedBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
