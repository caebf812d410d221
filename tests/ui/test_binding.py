"""``--backend local`` in the UI: the engine is bound once and serves every run.

The backend here is a test double of ``Backend("local")``: its ``bind`` counts how
often it is entered and points the workflows at the simulated server, as the real
one points them at the embedded engine it starts (which these tests never start).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from concilium.graphs.workflows import Workflow
from concilium.serving import create_app
from concilium.ui import SharedBackend, add_ui, find_workflows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class CountingEngine:
    """Stands in for ``Backend.parse("local")``: one "engine" per bind, at the sim's URL."""

    kind = "local"

    def __init__(self, url: str):
        self.url = url
        self.binds = 0
        self.open = 0
        self.names: set[str] = set()

    @contextlib.asynccontextmanager
    async def bind(
        self,
        workflows: Sequence[Workflow],
        *,
        reload: Callable[[str, str | list[str]], Workflow] = lambda f, b: NotImplemented,
        log: Any = None,
    ) -> AsyncIterator[list[Workflow]]:
        self.binds += 1
        self.open += 1
        self.names = {m.served_name for wf in workflows for m in wf.models.values()}
        try:
            yield [reload(wf.file, [self.url]) for wf in workflows]
        finally:
            self.open -= 1


async def _run(client: httpx.AsyncClient, workflow: str, question: str) -> str:
    reply = await client.post("/runs", data={"workflow": workflow, "question": question})
    assert reply.status_code == 303, reply.text
    run_id = reply.headers["location"].rsplit("/", 1)[1]
    stream = (await client.get(f"/runs/{run_id}/events", timeout=120)).text
    assert "event: result" in stream, stream[-500:]
    return stream


async def test_the_engine_is_bound_once_for_every_run_even_a_model_named_later(
    sim: Any, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    mine = flows / "mine.yaml"
    shutil.copy(EXAMPLES / "debate.yaml", mine)
    mine.write_text(mine.read_text().replace("name: debate", "name: mine"))
    engine = CountingEngine(sim.url)
    shared = SharedBackend(engine, find_workflows([flows]).values())
    app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), backend=shared, workflow_dirs=[flows])
    transport = httpx.ASGITransport(app=app)
    async with shared:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8090"
        ) as client:
            await _run(client, "debate", "What is 12 * 7?")
            await _run(client, "self_consistency", "What is 2 + 2?")
            await _run(client, "mine", "What is 3 + 3?")
            assert engine.binds == 1 and engine.open == 1
            # launched with the model names of every workflow the picker lists
            assert "gemma-3-270m" in engine.names
            # a file edited after the start names a model the engine was not launched with
            mine.write_text(mine.read_text().replace("gemma-3-270m", "brand-new-model"))
            await sim.reset()
            await _run(client, "mine", "What is 4 + 4?")
            assert engine.binds == 1
            sent = {r["body"]["model"] for r in await sim.requests()}
            assert sent and sent <= engine.names and "brand-new-model" not in sent
    assert engine.open == 0  # leaving the UI stops the engine


async def test_add_ui_shares_a_plain_local_backend_by_itself(sim: Any) -> None:
    engine = CountingEngine(sim.url)
    app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), backend=engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as client:
        await _run(client, "debate", "What is 12 * 7?")
        await _run(client, "debate", "What is 2 + 2?")
    assert engine.binds == 1


async def test_an_engine_that_failed_to_start_is_tried_again_on_the_next_run(sim: Any) -> None:
    class FlakyEngine(CountingEngine):
        @contextlib.asynccontextmanager
        async def bind(self, workflows: Sequence[Workflow], **kw: Any) -> AsyncIterator[Any]:
            if self.binds == 0:
                self.binds += 1
                raise RuntimeError("engine did not become healthy")
            async with super().bind(workflows, **kw) as bound:
                yield bound

    engine = FlakyEngine(sim.url)
    async with SharedBackend(engine, []) as shared:
        app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), backend=shared)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8090"
        ) as client:
            reply = await client.post("/runs", data={"workflow": "debate", "question": "q?"})
            run_id = reply.headers["location"].rsplit("/", 1)[1]
            stream = (await client.get(f"/runs/{run_id}/events", timeout=120)).text
            assert "event: failed" in stream and "engine did not become healthy" in stream
            await _run(client, "debate", "What is 2 + 2?")
    assert engine.binds == 2 and engine.open == 0


async def test_serve_api_with_ui_hands_its_running_engine_to_the_ui(sim: Any) -> None:
    from concilium.graphs.workflows import load_workflow

    engine = CountingEngine(sim.url)
    served = [load_workflow(EXAMPLES / "debate.yaml")]
    async with engine.bind(served, reload=lambda f, b: load_workflow(f, api_base=b)) as bound:
        shared = SharedBackend.beside(engine, bound, find_workflows().values())
        app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), backend=shared)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8090"
        ) as client:
            await _run(client, "debate", "What is 12 * 7?")
            await _run(client, "self_consistency", "What is 2 + 2?")
        await shared.aclose()
        assert engine.binds == 1 and engine.open == 1  # only the API's own bind; still its to stop


async def test_runs_started_together_still_bind_the_engine_once(sim: Any) -> None:
    import asyncio

    engine = CountingEngine(sim.url)
    async with SharedBackend(engine, []) as shared:
        app = add_ui(create_app({}, bind=("127.0.0.1", 8090)), backend=shared)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8090"
        ) as client:
            questions = [f"What is {i} + {i}?" for i in range(4)]
            await asyncio.gather(*(_run(client, "debate", q) for q in questions))
    assert engine.binds == 1 and engine.open == 0
