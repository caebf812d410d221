"""The UI served by uvicorn on loopback, running workflows on the simulated server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
async def ui_url(sim: Any, tmp_path: Path) -> AsyncIterator[str]:
    """Base URL of ``concilium ui`` with a state file under ``tmp_path``."""
    import uvicorn

    from concilium.serving import Backend, create_app
    from concilium.ui import add_ui

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = add_ui(
        create_app({}, bind=("127.0.0.1", port)),
        backend=Backend.parse(sim.url),
        state=tmp_path / "run.db",
    )
    ready = asyncio.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            ready.set()

    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await asyncio.wait_for(ready.wait(), 30)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
