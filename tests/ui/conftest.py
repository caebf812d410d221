"""The UI served by uvicorn on loopback, running workflows on the simulated server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

FLOWS = Path(__file__).resolve().parents[1] / "evals" / "workflows"


@pytest.fixture
async def ui_url(sim: Any, tmp_path: Path) -> AsyncIterator[str]:
    """Base URL of ``concilium ui`` with a state file under ``tmp_path``."""
    import uvicorn

    from concilium.app import Session
    from concilium.serving import create_app
    from concilium.ui import add_ui

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = add_ui(
        create_app({}, bind=("127.0.0.1", port)),
        session=Session(sim.url),
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


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a real ``concilium eval`` of three methods on the simulated server
    (its ``--report`` at ``eval_dir.parents[1] / "eval.html"``). Made once for the session:
    the tests that use it only read it."""
    import json

    from click.testing import CliRunner

    from concilium.agents.sim import Latency, SimConfig
    from concilium.cli import main
    from concilium.serving import SimServer

    root = tmp_path_factory.mktemp("eval")
    data = root / "arith.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} + {3 * i}?", "answer": 4 * i})
            + "\n"
            for i in range(4)
        )
    )
    out = root / "evals" / "arith"
    argv = ["eval", str(data), *(str(FLOWS / f) for f in ("single.yaml", "sc.yaml", "debate.yaml"))]
    argv += ["--out", str(out), "--report", str(root / "eval.html")]

    async def run() -> Any:
        # the simulated server of tests/conftest.py's ``sim`` (a test double)
        async with SimServer(SimConfig(seed=1, latency=Latency(fixed=0.02))) as sim:
            return await asyncio.to_thread(CliRunner().invoke, main, [*argv, "--backend", sim.url])

    got = asyncio.run(run())
    assert got.exit_code == 0, got.output
    return out


@pytest.fixture
async def eval_url(eval_dir: Path, tmp_path: Path) -> AsyncIterator[str]:
    """Base URL of ``concilium ui --evals`` given the folder that holds ``eval_dir``."""
    import uvicorn

    from concilium.serving import create_app
    from concilium.ui import add_ui

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = add_ui(create_app({}, bind=("127.0.0.1", port)), eval_dirs=[eval_dir.parent])
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


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[int], Any]], Awaitable[str]]]:
    """``await serve(make_app)``: uvicorn on a free loopback port serving
    ``make_app(port)``; returns its base URL. Every server stops when the test ends."""
    import uvicorn

    started: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(make_app: Callable[[int], Any]) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        ready = asyncio.Event()

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                ready.set()

        server = Server(uvicorn.Config(make_app(port), log_level="warning", lifespan="off"))
        started.append((server, asyncio.create_task(server.serve(sockets=[sock]))))
        await asyncio.wait_for(ready.wait(), 30)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, task in started:
        server.should_exit = True
        await task
