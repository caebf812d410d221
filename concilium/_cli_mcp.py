"""``concilium serve mcp WORKFLOW...``: workflows as tools of an MCP server.

Registered under the ``serve`` group by ``concilium/cli.py``. stdio is the default
transport (an MCP host starts the command itself); ``--transport http`` serves
streamable HTTP at ``http://HOST:PORT/mcp``, loopback only unless an API key is given.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click

from concilium._errors import echo_err

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from concilium.serving import Backend

__all__ = ["serve_mcp"]


def _backend(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from concilium._errors import UserError
    from concilium.serving import Backend

    try:
        return Backend.parse(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None


@click.command("mcp")
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--backend",
    "-b",
    callback=_backend,
    help="sim (simulated server), local (embedded engine), or a URL.",
)
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio: an MCP host runs this command; http: streamable HTTP at /mcp.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind with --transport http (beyond loopback needs --api-key).",
)
@click.option(
    "--port",
    default=8090,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--api-key",
    envvar="CONCILIUM_API_KEY",
    help="Require this bearer token over HTTP, 16+ characters beyond loopback.",
)
def serve_mcp(
    workflows: tuple[str, ...],
    backend: Backend,
    transport: str,
    host: str,
    port: int,
    api_key: str | None,
) -> None:
    """Serve WORKFLOWS as MCP tools (one tool per workflow, input {question})."""
    from concilium._errors import UserError, escape_controls
    from concilium.serving import check_bind

    try:  # exit codes as concilium's other commands: 2 a user mistake, 130 Ctrl-C
        if transport == "http":
            check_bind(host, api_key)
        asyncio.run(_serve(workflows, backend, transport, host, port, api_key))
    except UserError as exc:
        click.echo(f"error: {escape_controls(str(exc))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


async def _serve(
    paths: tuple[str, ...],
    backend: Backend,
    transport: str,
    host: str,
    port: int,
    api_key: str | None,
) -> None:
    from concilium._errors import UserError
    from concilium.agents import aclose
    from concilium.graphs.workflows import load_workflow
    from concilium.serving import create_mcp_server

    workflows = [load_workflow(path) for path in paths]
    seen: set[str] = set()
    for path, wf in zip(paths, workflows, strict=True):
        if wf.name in seen:
            raise UserError(f"two workflows are named {wf.name!r} ({path}); give each its own name")
        seen.add(wf.name)
    async with backend.bind(workflows, log=echo_err) as bound:
        server = create_mcp_server({wf.name: wf for wf in bound})
        if backend.notice:
            click.echo(backend.notice, err=True)  # stdout is the protocol's under stdio
        try:
            if transport == "stdio":
                await server.run_stdio_async()
            else:
                await _serve_http(server, host, port, api_key, sorted(seen))
        finally:
            await aclose()


async def _serve_http(
    server: MCPServer, host: str, port: int, api_key: str | None, names: list[str]
) -> None:
    import socket

    import uvicorn

    from concilium._errors import UserError
    from concilium.serving import mcp_http_app

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port, or 0 for a free one"
        ) from None
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    ready = f"serving MCP tools {names} at http://{shown}:{bound_port}/mcp"
    app = mcp_http_app(server, host=host, api_key=api_key)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:  # the socket listens now: clients may connect
                click.echo(ready, err=True)

    await Server(uvicorn.Config(app, log_level="warning")).serve(sockets=[sock])
