"""``concilium ui``: the local web UI (Run, History and Evaluation pages)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import click


def _backend(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from concilium._errors import UserError
    from concilium.serving import Backend

    try:
        return Backend.parse(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None


@click.command("ui")
@click.option(
    "--backend",
    "-b",
    callback=_backend,
    help="sim (simulated server), local (embedded engine), or a URL.",
)
@click.option(
    "--state", type=click.Path(dir_okay=False), help="SQLite file that keeps the run history."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (beyond loopback needs --api-key).",
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
    help="Bearer token, needed beyond loopback (16+ characters).",
)
@click.option(
    "--workflows",
    "workflow_dirs",
    multiple=True,
    type=click.Path(exists=True),
    help="A workflow file or folder to offer (repeatable).",
)
@click.option(
    "--evals",
    "eval_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A concilium eval output folder, or a folder of them (repeatable): the Evaluation page.",
)
def ui(
    backend: Any,
    state: str | None,
    host: str,
    port: int,
    api_key: str | None,
    workflow_dirs: tuple[str, ...],
    eval_dirs: tuple[str, ...] = (),
) -> None:
    """Watch runs in a browser: start a workflow, see its agents live, read past runs."""
    from concilium._errors import UserError
    from concilium.serving import check_bind

    try:
        check_bind(host, api_key)
        asyncio.run(_serve(backend, state, host, port, api_key, workflow_dirs, eval_dirs))
    except UserError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        pass


async def _serve(
    backend: Any,
    state: str | None,
    host: str,
    port: int,
    api_key: str | None,
    dirs: tuple[str, ...],
    eval_dirs: tuple[str, ...] = (),
) -> None:
    import uvicorn

    from concilium._errors import UserError
    from concilium.serving import create_app
    from concilium.ui import SharedBackend, add_ui, find_workflows

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port, or 0 for a free one"
        ) from None
    bound = sock.getsockname()[1]
    # --backend local: one engine for the UI's lifetime, started on the first run
    shared = SharedBackend(
        backend, find_workflows(dirs).values(), log=lambda line: click.echo(line, err=True)
    )
    app = add_ui(
        create_app({}, api_key=api_key, bind=(host, bound)),
        backend=shared,
        state=state,
        workflow_dirs=dirs,
        api_key=api_key,
        eval_dirs=eval_dirs,
    )
    shown = f"[{host}]" if ":" in host else host
    ready = f"concilium ui at http://{shown}:{bound}/"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                click.echo(ready, err=True)

    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    async with shared:
        await server.serve(sockets=[sock])
