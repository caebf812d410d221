"""The application layer: build a workflow once, bind it to a backend in memory, run it.

Every front-end (the command line, the UI, ``concilium eval``, the API and MCP
servers, the benchmarks) and every Python user take the same three steps::

    workflow source  (a YAML file, a spec or a Python graph, plus dotted overrides)
       -> load      built once: parsed, validated, agents and graph made in memory
       -> Session   owns the backend's servers or engine, binds the built workflow
                    to them in memory (a file is never read again), runs it, closes

Example:
    >>> import asyncio
    >>> from concilium.app import Session, load
    >>> workflow = load("examples/self_consistency.yaml", overrides={"workflow.samples": 3})
    >>> async def main():
    ...     async with Session("sim") as session:
    ...         return (await session.run(workflow, "What is 6 * 7?")).calls
    >>> asyncio.run(main())
    1
"""

from typing import TYPE_CHECKING, Any

from ._backend import Backend
from ._listen import Listener

if TYPE_CHECKING:
    from ._session import Session
    from ._source import Override, load, parse_override

__all__ = [
    # building a workflow once
    "load",
    "Override",
    "parse_override",
    # where its calls go, and the runs
    "Backend",
    "Session",
    # serving an app on a socket
    "Listener",
]


def __getattr__(name: str) -> Any:
    # building and running import the graphs (langgraph) and the agents (litellm):
    # seconds that parsing --backend, or an MCP server answering initialize, need not wait
    if name == "Session":
        from ._session import Session

        return Session
    if name in ("Override", "load", "parse_override"):
        from . import _source

        return getattr(_source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
