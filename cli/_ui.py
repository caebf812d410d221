"""``concilium ui``: the local web UI (Run, History and Evaluation pages)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from ._common import (
    api_key_option,
    backend_option,
    echo_err,
    guard,
    listen_options,
    otlp_option,
    tracing,
)


@click.command("ui")
@backend_option
@click.option(
    "--state", type=click.Path(dir_okay=False), help="SQLite file that keeps the run history."
)
@listen_options(8090)
@api_key_option
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
@otlp_option
@guard()
def ui(
    backend: Any,
    state: str | None,
    host: str,
    port: int,
    api_key: str | None,
    workflow_dirs: tuple[str, ...],
    eval_dirs: tuple[str, ...] = (),
    otlp_endpoint: str | None = None,
) -> None:
    """Watch runs in a browser: start a workflow, see its agents live, read past runs."""
    with tracing(otlp_endpoint):
        asyncio.run(_serve(backend, state, host, port, api_key, workflow_dirs, eval_dirs))


async def _serve(
    backend: Any,
    state: str | None,
    host: str,
    port: int,
    api_key: str | None,
    dirs: tuple[str, ...],
    eval_dirs: tuple[str, ...] = (),
) -> None:
    from concilium.app import Listener, Session
    from concilium.serving import create_app
    from concilium.ui import add_ui

    listener = Listener.bind(host, port, api_key=api_key)
    # one session for the UI's lifetime: --backend local starts the engine on the first
    # run and keeps it; every run shares its servers and connections
    async with Session(backend, log=echo_err) as session:
        app = add_ui(
            create_app({}, api_key=api_key, bind=listener.address),
            session=session,
            state=state,
            workflow_dirs=dirs,
            api_key=api_key,
            eval_dirs=eval_dirs,
        )
        await listener.serve(app, ready=f"concilium ui at {listener.url('/')}", say=echo_err)
