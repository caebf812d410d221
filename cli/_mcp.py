"""``concilium serve mcp WORKFLOW...``: workflows as tools of an MCP server.

Registered under the ``serve`` group (``_serve.py``); each workflow is built once
and bound through one ``concilium.app.Session``. stdio is the default
transport (an MCP host starts the command itself); ``--transport http`` serves
streamable HTTP at ``http://HOST:PORT/mcp``, on 127.0.0.1 unless an API key is given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    api_key_option,
    backend_option,
    echo_err,
    guard,
    listen_options,
    load_named,
    otlp_option,
    tracing,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from concilium.app import Backend, Listener
    from concilium.graphs.workflows import Workflow

__all__ = ["serve_mcp"]


@click.command("mcp")
@click.argument("workflows", nargs=-1, required=True, metavar="WORKFLOW...")
@backend_option
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio: an MCP host runs this command; http: streamable HTTP at /mcp.",
)
@listen_options(8090, "Address to bind with --transport http (any but 127.0.0.1 needs --api-key).")
@api_key_option
@otlp_option
@guard()
def serve_mcp(
    workflows: tuple[str, ...],
    backend: Backend,
    transport: str,
    host: str,
    port: int,
    api_key: str | None,
    otlp_endpoint: str | None,
) -> None:
    """Serve WORKFLOWS (YAML files or app.py:graph) as MCP tools (input {question})."""
    if transport == "stdio":  # tracing starts with the build, after the handshake
        asyncio.run(_serve_stdio(workflows, backend, otlp_endpoint))
        return
    with tracing(otlp_endpoint):
        asyncio.run(_serve_http(workflows, backend, host, port, api_key))


async def _serve_http(
    paths: tuple[str, ...], backend: Backend, host: str, port: int, api_key: str | None
) -> None:
    from concilium.app import Listener, Session
    from concilium.serving import create_mcp_server

    workflows = load_named(paths)
    # bound before the backend starts: a refused address or a port in use fails first
    listener = Listener.bind(host, port, api_key=api_key)
    async with Session(backend, log=echo_err) as session:
        server = create_mcp_server({wf.name: await session.bind(wf) for wf in workflows})
        if backend.notice:
            echo_err(backend.notice)
        await _listen(server, listener, api_key, sorted(wf.name for wf in workflows))


async def _serve_stdio(paths: tuple[str, ...], backend: Backend, otlp_endpoint: str | None) -> None:
    """Answer the handshake (``initialize`` or ``server/discover``) first, then build:
    an MCP host waits for that answer (the MCP Inspector 15 s), and building imports
    the graphs, the agents and the model client (seconds). Only the SDK is imported
    before the answer; the client's next message starts the build, and each request
    but ``ping`` waits for it. When a workflow cannot be built, each request gets the
    reason as its error, and so does the exit (code and stderr) once the client leaves."""
    from mcp.server.mcpserver import MCPServer

    # the name and instructions of serving's create_mcp_server, which is not imported yet
    server: MCPServer = MCPServer(
        name="concilium", instructions="Each tool runs one concilium workflow on a question."
    )
    start, built = asyncio.Event(), asyncio.get_running_loop().create_future()
    # first, before the SDK's tracing middleware: a request's span then starts after
    # the build has set up tracing (the handshake is not traced)
    server.middleware.insert(0, _AfterInitialize(start, built))

    async def build(stack: contextlib.AsyncExitStack) -> None:
        await start.wait()
        try:
            # the imports (seconds) in a worker thread: the loop goes on answering pings
            workflows = await asyncio.to_thread(_load, paths, stack, otlp_endpoint)
            from concilium.app import Session
            from concilium.serving import create_mcp_server

            session = await stack.enter_async_context(Session(backend, log=echo_err))
            bound = {wf.name: await session.bind(wf) for wf in workflows}
        except Exception as exc:  # a bad file, or a bug: no request may wait forever
            built.set_exception(exc)  # every request gets the reason, then the exit
            return
        create_mcp_server(bound, server=server)
        built.set_result(None)
        if backend.notice:
            echo_err(backend.notice)  # stdout is the protocol's

    async with contextlib.AsyncExitStack() as stack:
        builder = asyncio.create_task(build(stack))
        try:
            await server.run_stdio_async()  # until the client closes stdin
        finally:
            builder.cancel()  # the client may leave before it asks for anything
    failed = built.exception() if built.done() else None
    if failed is not None:
        raise failed


def _load(
    paths: tuple[str, ...], stack: contextlib.AsyncExitStack, otlp_endpoint: str | None
) -> list[Workflow]:
    """The workflows, with tracing started (until ``stack`` closes) and what binds and
    serves them imported."""
    stack.enter_context(tracing(otlp_endpoint))  # imports the agents when traced
    import concilium.serving  # noqa: F401
    from concilium.app import Session  # noqa: F401

    return load_named(paths)


# answered before the workflows are built: the handshake of protocol versions up to
# 2025-11-25 (initialize), of 2026-07-28 (server/discover), and a liveness check
_HANDSHAKE = frozenset({"initialize", "server/discover", "ping"})


class _AfterInitialize:
    """MCP middleware: the handshake passes at once; any other message starts the
    build (``start``), and a request waits until it is done (``built``)."""

    def __init__(self, start: asyncio.Event, built: asyncio.Future[None]) -> None:
        self.start, self.built = start, built

    async def __call__(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        if ctx.method not in _HANDSHAKE:
            self.start.set()
            if ctx.request_id is not None:  # a notification does not wait
                await asyncio.wait([self.built])  # the future stays retrievable below
                if failed := self.built.exception():
                    from mcp.shared.exceptions import MCPError
                    from mcp.types import INTERNAL_ERROR

                    raise MCPError(INTERNAL_ERROR, f"the server could not start: {failed}")
        return await call_next(ctx)


async def _listen(
    server: MCPServer, listener: Listener, api_key: str | None, names: list[str]
) -> None:
    from concilium.serving import mcp_http_app

    app = mcp_http_app(server, bind=listener.address, api_key=api_key)
    ready = f"serving MCP tools {names} at {listener.url('/mcp')}"
    await listener.serve(app, ready=ready, say=echo_err, lifespan="auto")
