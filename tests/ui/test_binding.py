"""The UI's runs go through one ``concilium.app.Session``: ``--backend local`` starts
the engine once, on the first run, and every run after shares it and the session's
connections; a run never closes what the others share.

The session here is a ``Session("local")`` whose engine is a test double: the simulated
server on loopback stands where the embedded engine would be started (these tests
never start it), and every start is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from concilium.app import Session
from concilium.serving import create_app
from concilium.ui import add_ui

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class StandInEngine:
    """What ``local_engine`` yields, pointing at the simulated server (a test double)."""

    def __init__(self, url: str) -> None:
        self.urls = [url]
        self.names = ("gemma-3-270m",)


class EngineSession(Session):
    """``Session("local")`` with its engine start replaced by the simulated server."""

    def __init__(self, url: str, fail_first: int = 0) -> None:
        super().__init__("local")
        self.url = url
        self.fail_first = fail_first
        self.running = 0

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[StandInEngine]:
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("engine did not become healthy")
        self.running += 1
        try:
            yield StandInEngine(self.url)
        finally:
            self.running -= 1

    def _engine(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._running()


async def _run(client: httpx.AsyncClient, workflow: str, question: str) -> str:
    reply = await client.post("/runs", data={"workflow": workflow, "question": question})
    assert reply.status_code == 303, reply.text
    run_id = reply.headers["location"].rsplit("/", 1)[1]
    stream = (await client.get(f"/runs/{run_id}/events", timeout=120)).text
    assert "event: result" in stream, stream[-500:]
    return stream


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8090"
    )


async def test_the_engine_starts_once_for_every_run_even_a_model_named_later(
    sim: Any, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    mine = flows / "mine.yaml"
    shutil.copy(EXAMPLES / "debate.yaml", mine)
    mine.write_text(mine.read_text().replace("name: debate", "name: mine"))
    session = EngineSession(sim.url)
    async with session:
        app = add_ui(
            create_app({}, bind=("127.0.0.1", 8090)), session=session, workflow_dirs=[flows]
        )
        async with _client(app) as client:
            await _run(client, "debate", "What is 12 * 7?")
            await _run(client, "self_consistency", "What is 2 + 2?")
            await _run(client, "mine", "What is 3 + 3?")
            assert session.starts == 1 and session.running == 1
            # a file edited since names a model of its own: the engine serves it anyway,
            # under the one name it answers to
            mine.write_text(mine.read_text().replace("gemma-3-270m", "brand-new-model"))
            await sim.reset()
            await _run(client, "mine", "What is 4 + 4?")
            assert session.starts == 1
            sent = {r["body"]["model"] for r in await sim.requests()}
            assert sent == {"gemma-3-270m"}
    assert session.running == 0  # leaving the session stops the engine


async def test_an_engine_that_failed_to_start_is_tried_again_on_the_next_run(sim: Any) -> None:
    session = EngineSession(sim.url, fail_first=1)
    async with session:
        app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), session=session)
        async with _client(app) as client:
            reply = await client.post("/runs", data={"workflow": "debate", "question": "q?"})
            run_id = reply.headers["location"].rsplit("/", 1)[1]
            stream = (await client.get(f"/runs/{run_id}/events", timeout=120)).text
            assert "event: failed" in stream and "engine did not become healthy" in stream
            await _run(client, "debate", "What is 2 + 2?")
    assert session.starts == 2 and session.running == 0


async def test_fifty_runs_started_together_all_complete_on_one_engine(sim: Any) -> None:
    """Each run used to close the HTTP session every other run shared (34/50, then
    5/50 completed); the session owns it now and closes it once, at the end."""
    session = EngineSession(sim.url)
    async with session:
        app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), session=session)
        async with _client(app) as client:
            questions = [f"What is {i} + {i}?" for i in range(50)]
            streams = await asyncio.gather(*(_run(client, "debate", q) for q in questions))
    assert len(streams) == 50 and session.starts == 1 and session.running == 0
