"""Where a workflow's model calls go: ``--backend sim | local | URL`` in one place.

``concilium run`` and ``concilium serve api`` both take a backend. :class:`Backend`
parses the value (an unknown one is refused with the fix), :meth:`Backend.bind`
starts what it needs (the simulated server with each workflow's ``simulate:``
section, or the embedded engine serving every model name the workflows use; nothing
for a URL) and reloads the workflows with their models pointed at it, and
:attr:`Backend.label` says in words what answers. The simulated server always says
it is a test double.

Example:
    >>> Backend.parse("sim").label
    "simulated server -- a test double; its replies are not a model's"
    >>> Backend.parse("http://127.0.0.1:8000/v1").url
    'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from concilium._errors import UserError
from concilium.agents import SimConfig

if TYPE_CHECKING:
    from concilium.graphs.workflows import Workflow

BackendKind = Literal["models", "sim", "local", "url"]
ApiBase = str | list[str]
Log = Callable[[str], None]
# (workflow file, api_base) -> the workflow loaded again with every model served there
Reload = Callable[[str, ApiBase], "Workflow"]

SIM_LABEL = "simulated server -- a test double; its replies are not a model's"
LOCAL_LABEL = "embedded engine -- Gemma 3 270M base on vLLM's CPU build: real tokens, weak answers"


def _reload(path: str, api_base: ApiBase) -> Workflow:
    from concilium.graphs.workflows import load_workflow

    return load_workflow(path, api_base=api_base)


@dataclass(frozen=True)
class Backend:
    """Where model calls go.

    Attributes:
        kind: ``models`` (each model's own ``api_base`` from the file), ``sim`` (the
            simulated server, a test double), ``local`` (the embedded engine) or
            ``url`` (one OpenAI-compatible server for every model).
        url: the server's URL when ``kind`` is ``url``.
    """

    kind: BackendKind = "models"
    url: str | None = None

    @classmethod
    def parse(cls, value: str | None) -> Backend:
        """Read a ``--backend`` value: ``sim``, ``local``, an http(s) URL, or ``None``.

        Raises:
            UserError: for anything else, with the values that work.

        Example:
            >>> Backend.parse(None).kind, Backend.parse("local").kind
            ('models', 'local')
        """
        if value is None:
            return cls()
        if value in ("sim", "local"):
            return cls(value)
        if value.startswith(("http://", "https://")):
            return cls("url", value)
        raise UserError(
            f"{value!r} is not a backend; use 'sim', 'local' or a URL such as http://127.0.0.1:8000/v1"
        )

    @property
    def label(self) -> str:
        """What answers, in words (what the CLI shows beside a run)."""
        if self.kind == "sim":
            return SIM_LABEL
        if self.kind == "local":
            return LOCAL_LABEL
        if self.kind == "url":
            return f"the OpenAI-compatible server at {self.url}"
        return "each model's own server, as the workflow file says"

    @property
    def notice(self) -> str | None:
        """The ``(backend: ...)`` line shown above a run's output: for the simulated
        server and the embedded engine, whose replies must not pass for a real model's."""
        return f"(backend: {self.label})" if self.kind in ("sim", "local") else None

    @contextlib.asynccontextmanager
    async def bind(
        self, workflows: Sequence[Workflow], *, reload: Reload = _reload, log: Log | None = None
    ) -> AsyncIterator[list[Workflow]]:
        """Start what this backend needs and yield the workflows bound to it; stop it on exit.

        Args:
            workflows: loaded workflows (each simulated server takes its workflow's
                ``simulate:`` section).
            reload: loads a workflow file again with every model served at an
                api_base (default ``load_workflow(path, api_base=...)``; pass your
                own to keep your tools).
            log: receives the embedded engine's start-up lines.

        Example:
            >>> import asyncio, pathlib, tempfile
            >>> from concilium.graphs.workflows import load_workflow
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "vote.yaml"
            >>> _ = path.write_text('''
            ... name: vote
            ... models: {m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}}
            ... agents: {a: {model: m}}
            ... workflow: {kind: self_consistency, agent: a, samples: 3}
            ... ''')
            >>> async def demo():
            ...     async with Backend.parse("sim").bind([load_workflow(path)]) as (wf,):
            ...         return "127.0.0.1:1/v1" in str(wf.models["m"].api_base)
            >>> asyncio.run(demo())
            False
        """
        if self.kind == "models":
            yield list(workflows)
        elif self.kind == "url":
            assert self.url is not None
            yield [reload(wf.file, self.url) for wf in workflows]
        elif self.kind == "sim":
            from ._sim_server import SimServer

            async with contextlib.AsyncExitStack() as stack:
                bound: list[Workflow] = []
                for wf in workflows:
                    sim = await stack.enter_async_context(SimServer(wf.sim or SimConfig()))
                    bound.append(reload(wf.file, sim.url))
                yield bound
        else:
            from ._engine import local_engine

            # one engine answers to every model name the workflows use
            names = sorted({m.served_name for wf in workflows for m in wf.models.values()})
            async with local_engine(names=names, log=log) as engine:
                yield [reload(wf.file, list(engine.urls)) for wf in workflows]
