"""``concilium serve mcp WORKFLOW...``: workflows as tools of an MCP server.

Registered under the ``serve`` group (``_serve.py``); each workflow is built once
and bound through one ``concilium.app.Session``. stdio is the default
transport (an MCP host starts the command itself); ``--transport http`` serves
streamable HTTP at ``http://HOST:PORT/mcp``, on 127.0.0.1 unless an API key is given.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

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
    with tracing(otlp_endpoint):
        asyncio.run(_serve(workflows, backend, transport, host, port, api_key))


async def _serve(
    paths: tuple[str, ...],
    backend: Backend,
    transport: str,
    host: str,
    port: int,
    api_key: str | None,
) -> None:
    from concilium.app import Listener, Session
    from concilium.serving import create_mcp_server

    workflows = load_named(paths)
    # bound before the backend starts: a refused address or a port in use fails first
    listener = Listener.bind(host, port, api_key=api_key) if transport == "http" else None
    async with Session(backend, log=echo_err) as session:
        server = create_mcp_server({wf.name: await session.bind(wf) for wf in workflows})
        if backend.notice:
            echo_err(backend.notice)  # stdout is the protocol's under stdio
        if listener is None:
            await server.run_stdio_async()
        else:
            await _serve_http(server, listener, api_key, sorted(wf.name for wf in workflows))


async def _serve_http(
    server: MCPServer, listener: Listener, api_key: str | None, names: list[str]
) -> None:
    from concilium.serving import mcp_http_app

    app = mcp_http_app(server, bind=listener.address, api_key=api_key)
    ready = f"serving MCP tools {names} at {listener.url('/mcp')}"
    await listener.serve(app, ready=ready, say=echo_err, lifespan="auto")
