"""The UI's HTTP endpoints, without a browser."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3

import aiohttp
import pytest
from click.testing import CliRunner

from concilium.cli import main
from concilium.ui import RunHistory


async def _start(session: aiohttp.ClientSession, url: str, question: str) -> str:
    async with session.post(
        f"{url}/runs", data={"workflow": "debate", "question": question}, allow_redirects=False
    ) as reply:
        assert reply.status == 303, await reply.text()
        return reply.headers["location"].rsplit("/", 1)[1]


async def _events(session: aiohttp.ClientSession, url: str, run_id: str) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    async with session.get(f"{url}/runs/{run_id}/events") as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for raw in reply.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                got.append((name, line[6:]))
    return got


async def test_pages_render_and_the_stream_delivers_the_run_in_order(ui_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ui_url}/") as reply:
            page = await reply.text()
            assert reply.status == 200 and 'value="debate"' in page
        run_id = await _start(session, ui_url, "What is 12 * 7?")
        events = await _events(session, ui_url, run_id)
        assert [name for name, _ in events][-1] == "result"
        result = json.loads(events[-1][1])
        sent = [json.loads(data) for name, data in events if name == "event"]
        times = [e["t"] for e in sent]
        assert times == sorted(times)
        turns = [e for e in sent if e["type"] == "turn"]
        # the stream's turns are the run's own transcript, in order
        assert [(t["agent"], t["answer"]) for t in turns] == [
            (t["agent"], t["answer"]) for t in result["transcript"]
        ]
        assert sum(e["type"] == "call_finished" for e in sent) == result["calls"]
        async with session.get(f"{ui_url}/history") as reply:
            assert run_id in await reply.text()
        async with session.get(f"{ui_url}/runs/{run_id}") as reply:
            assert reply.status == 200 and "What is 12 * 7?" in await reply.text()
        other = await _start(session, ui_url, "What is 2 + 2?")
        await _events(session, ui_url, other)
        async with session.get(f"{ui_url}/compare?run={run_id}&run={other}") as reply:
            both = await reply.text()
            assert "What is 12 * 7?" in both and "What is 2 + 2?" in both


async def test_runs_started_at_once_all_finish_and_are_kept_in_history(
    ui_url: str, tmp_path
) -> None:
    questions = [f"What is {i} * 7?" for i in range(6)]
    async with aiohttp.ClientSession() as session:
        ids = await asyncio.gather(*(_start(session, ui_url, q) for q in questions))
        streams = await asyncio.gather(*(_events(session, ui_url, i) for i in ids))
        assert [events[-1][0] for events in streams] == ["result"] * len(ids)
        async with session.get(f"{ui_url}/history") as reply:
            page = await reply.text()
    assert all(i in page for i in ids)
    saved = {r.run_id: r for r in RunHistory(tmp_path / "run.db").list()}
    assert sorted(saved) == sorted(ids)
    answers = [json.loads(events[-1][1])["answer"] for events in streams]
    assert [saved[i].answer for i in ids] == answers
    assert not any(r.error for r in saved.values())


async def test_pages_answer_while_another_process_holds_the_state_files_lock(
    ui_url: str, tmp_path
) -> None:
    """``concilium run --state`` on the same file writes its checkpoints: a run that ends
    meanwhile waits for the file off the event loop, and is saved once the lock is free."""
    other = sqlite3.connect(tmp_path / "run.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a writer in another process holds it
    async with aiohttp.ClientSession() as session:
        run_id = await _start(session, ui_url, "What is 3 * 7?")
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # until the run has its result and waits to be saved
            async with session.get(f"{ui_url}/runs/{run_id}") as reply:
                page = await reply.text()
            assert "new EventSource(" in page, "the run was no longer live before it was saved"
            data = page.split('<script id="data" type="application/json">')[1].split("</script>")
            if json.loads(data[0])[0]["result"] is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, "the run did not end"
            await asyncio.sleep(0.05)
        async with session.get(f"{ui_url}/") as reply:  # the server still answers
            assert reply.status == 200
        other.execute("COMMIT")
        events = await _events(session, ui_url, run_id)
    other.close()
    assert events[-1][0] == "result"
    [row] = RunHistory(tmp_path / "run.db").list()
    assert row.run_id == run_id and row.answer and row.error is None


async def test_a_foreign_host_or_origin_is_refused(ui_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ui_url}/", headers={"Host": "evil.example:80"}) as reply:
            assert reply.status == 403
        async with session.post(
            f"{ui_url}/runs",
            data={"workflow": "debate", "question": "q"},
            headers={"Origin": "http://evil.example"},
        ) as reply:
            assert reply.status == 403


async def test_an_unknown_workflow_or_run_says_what_exists(ui_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{ui_url}/runs", data={"workflow": "nope", "question": "q"}) as r:
            assert r.status == 400 and "debate" in await r.text()
        async with session.get(f"{ui_url}/runs/missing") as reply:
            assert reply.status == 404


def test_beyond_loopback_without_a_key_is_refused() -> None:
    got = CliRunner().invoke(main, ["ui", "--host", "0.0.0.0", "--port", "0"])
    assert got.exit_code == 2 and "api-key" in got.output


@pytest.mark.parametrize("sep", ["</script>"])
def test_the_report_is_self_contained(tmp_path, sep: str) -> None:
    out = tmp_path / "run.html"
    got = CliRunner().invoke(
        main,
        [
            "run",
            "examples/debate.yaml",
            "--backend",
            "sim",
            "-i",
            f"What is 12*7? {sep}",
            "--report",
            str(out),
            "--state",
            str(tmp_path / "run.db"),
        ],
    )
    assert got.exit_code == 0, got.output
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    found = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None
    data = json.loads(found[1])
    assert data[0]["result"]["answer"] in got.output
    assert sqlite3.connect(tmp_path / "run.db").execute("select 1").fetchone() == (1,)


async def test_serve_api_with_ui_serves_the_pages_beside_the_openai_endpoints() -> None:
    import sys

    from concilium.serving import ManagedProcess

    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml",
            "--backend", "sim", "--port", "0", "--ui"]  # fmt: skip
    proc = await ManagedProcess(
        "concilium serve api --ui", argv, ready_pattern=r"at (?P<url>http://\S+)/v1",
        health_url="{url}/health", deadline=60,
    ).start()  # fmt: skip
    try:
        assert proc.url is not None
        base = proc.url
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/ui/") as reply:
                assert reply.status == 200 and 'value="debate"' in await reply.text()
            body = {"model": "debate", "messages": [{"role": "user", "content": "What is 12 * 7?"}]}
            async with session.post(f"{base}/v1/chat/completions", json=body) as reply:
                assert reply.status == 200
                done = await reply.json()
            assert done["choices"][0]["message"]["content"] == done["concilium"]["answer"]
            run_id = await _start(session, f"{base}/ui", "What is 12 * 7?")
            events = await _events(session, f"{base}/ui", run_id)
            assert events[-1][0] == "result"
    finally:
        await proc.stop()


async def test_a_failed_run_is_kept_in_history_with_its_error(tmp_path) -> None:
    import socket

    import httpx

    from concilium.app import Session
    from concilium.serving import create_app
    from concilium.ui import RunHistory, add_ui

    with socket.socket() as closed:  # a port nobody listens on: every call fails
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    app = add_ui(
        create_app({}, bind=("127.0.0.1", 8090)),
        session=Session(dead),
        state=tmp_path / "run.db",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as client:
        reply = await client.post("/runs", data={"workflow": "debate", "question": "What is 2+2?"})
        assert reply.status_code == 303, reply.text
        run_id = reply.headers["location"].rsplit("/", 1)[1]
        stream = (await client.get(f"/runs/{run_id}/events", timeout=120)).text
        assert "event: failed" in stream
        [row] = RunHistory(tmp_path / "run.db").list()
        assert row.run_id == run_id and row.answer is None and row.error
        assert row.error in json.loads(stream.split("event: failed\ndata: ")[1].split("\n")[0])
        history = (await client.get("/history")).text
        assert "failed: " in history and run_id in history
        page = (await client.get(f"/runs/{run_id}")).text
        assert 'class="error"' in page


async def test_the_evaluation_page_shows_a_real_evals_summary_plot_and_items(
    eval_url: str, eval_dir
) -> None:
    summary = json.loads((eval_dir / "summary.json").read_text())["methods"]
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{eval_url}/evals") as reply:
            page = await reply.text()
            assert reply.status == 200
        found = re.findall(
            r'<tr class="method" data-method="([^"]+)" data-accuracy="([^"]+)"', page
        )
        assert [(m, float(a)) for m, a in found] == [(s["method"], s["accuracy"]) for s in summary]
        assert f"{summary[2]['vs_first']['mcnemar_p']:.3g}" in page
        async with session.get(f"{eval_url}/evals/0/plot.svg") as reply:
            assert reply.status == 200 and reply.content_type == "image/svg+xml"
            assert await reply.read() == (eval_dir / "accuracy_vs_tokens.svg").read_bytes()
        for bad in ("/evals/0/../../summary.json", "/evals/1/plot.svg", "/evals/0/plot.svg%2F.."):
            async with session.get(f"{eval_url}{bad}") as reply:
                assert reply.status == 404, bad
        row = next(r for r in rows if r["method"] == "debate")
        async with session.get(f"{eval_url}/evals/0/items/debate/{row['id']}") as reply:
            item = await reply.text()
            assert reply.status == 200
        assert f'<td id="item-gold">{row["gold"]}</td>' in item
        assert f'<td id="item-answer">{row["answer"]}</td>' in item
        found = re.search(r'<script id="data" type="application/json">(.*?)</script>', item, re.S)
        assert found is not None
        shown = json.loads(found[1])[0]["result"]["transcript"]
        assert [(t["agent"], t["answer"]) for t in shown] == [
            (t["agent"], t["answer"]) for t in row["transcript"]
        ]


def test_eval_report_writes_the_evaluation_as_one_file(tmp_path) -> None:
    from concilium.ui import render_eval_report

    with pytest.raises(FileNotFoundError, match=r"summary\.json"):
        render_eval_report(tmp_path)
