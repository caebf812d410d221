"""Where an eval's calls went: each server's /metrics read before and after, in the summary.

Real servers on loopback: two simulated replicas (a test double that serves vLLM's
counter names), a server without /metrics and a closed port. The figures are checked
against the servers' own counters read by the test (``/sim/stats``, ``/sim/requests``)
before and after, with traffic planted before the eval that must not be counted.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from click.testing import CliRunner

from concilium.cli import main
from concilium.evals._server_metrics import ServerWatch, render_servers
from concilium.serving import SimServer

# a question long enough (over 16 words, the simulated server's cache block) for the
# five samples of one item to share cached blocks
LONG = (
    "Read the question below with care and answer with one number in a box at the very end of it:"
)


def _data(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"{LONG} what is {i} + {i + 2}?", "answer": 2 * i + 2}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _workflow(tmp_path: Path, urls: list[str]) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(
        "name: sc\n"
        f"models:\n  m: {{model: hosted_vllm/sim, api_base: {json.dumps(urls)}}}\n"
        "agents:\n  solver: {model: m, temperature: 0.8, max_tokens: 32}\n"
        "workflow: {kind: self_consistency, agent: solver, samples: 5, answer: boxed}\n"
    )
    return path


async def _plant(base: str, times: int) -> None:
    """Traffic before the eval: the eval's figures must not count it."""
    body = {
        "model": "sim",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": f"{LONG} planted"}],
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(times):
            async with session.post(base + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200


async def _counters(sim: SimServer) -> tuple[int, int, int, int]:
    """The server's own counters by another door: completed, hits, queries, logged requests."""
    stats = await sim.stats()
    logged = len(await sim.requests())
    return stats["completed"], stats["prefix_cache_hits"], stats["prefix_cache_queries"], logged


def _eval(*args: str) -> Any:
    return CliRunner().invoke(main, ["eval", *args])


async def test_eval_on_two_replicas_reports_requests_and_hit_rate_per_server(
    tmp_path: Path,
) -> None:
    async with SimServer() as a, SimServer() as b:
        urls = [a.url, b.url]
        await _plant(a.base, 3)  # before the eval: counted in a's totals, not in the eval's figures
        before = [await _counters(a), await _counters(b)]
        assert before[0][0] == 3 and before[0][1] > 0  # the planted traffic hit the cache
        data, flow = _data(tmp_path), _workflow(tmp_path, urls)
        out = tmp_path / "out"
        result = await asyncio.to_thread(_eval, str(data), str(flow), "--out", str(out), "--json")
        assert result.exit_code == 0, result.output
        after = [await _counters(a), await _counters(b)]

    shown = json.loads(result.stdout)["servers"]
    assert shown == json.loads((out / "summary.json").read_text())["servers"]
    assert "other client's traffic" in shown["view"]
    rows = shown["servers"]
    assert [r["url"] for r in rows] == urls
    assert [r["metrics"] for r in rows] == [u.removesuffix("/v1") + "/metrics" for u in urls]
    for row, old, new in zip(rows, before, after, strict=True):
        requests, hits, queries = new[0] - old[0], new[1] - old[1], new[2] - old[2]
        assert new[3] - old[3] == requests  # every request the server logged finished
        assert row["requests"] == requests
        assert (row["prefix_cache_hits"], row["prefix_cache_queries"]) == (hits, queries)
        assert row["hit_rate"] == (round(hits / queries, 4) if queries else None)
    total = shown["total"]
    grown = [sum(n[i] - o[i] for o, n in zip(before, after, strict=True)) for i in range(3)]
    assert [total["requests"], total["prefix_cache_hits"], total["prefix_cache_queries"]] == grown
    assert total["hit_rate"] == round(grown[1] / grown[2], 4)
    assert (total["servers_read"], total["servers_without_metrics"]) == (2, 0)
    # the eval's own calls are all the servers saw in the window (nobody else sent any)
    calls = sum(
        json.loads(line)["calls"] for line in (out / "results.jsonl").read_text().splitlines()
    )
    assert total["requests"] == calls > 0
    assert total["prefix_cache_hits"] > 0  # five samples of one prompt share its blocks


async def test_plain_summary_lists_each_server_and_one_without_metrics(tmp_path: Path) -> None:
    async def no_metrics(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nothing here")

    app = web.Application()
    app.router.add_get("/metrics", no_metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    bare = f"http://127.0.0.1:{port}/v1"
    try:
        async with SimServer() as sim:
            watch = ServerWatch(timeout=2.0)
            await watch.start(urls=[sim.url, bare, closed])
            await _plant(sim.base, 2)
            await watch.stop()
            stats = await sim.stats()
    finally:
        await runner.cleanup()
    view = watch.section
    first, missing, dead = view["servers"]
    assert (first["requests"], first["prefix_cache_hits"], first["prefix_cache_queries"]) == (
        2, stats["prefix_cache_hits"], stats["prefix_cache_queries"])  # fmt: skip
    assert missing["no_metrics"] == "before: HTTP 404; after: HTTP 404"
    assert dead["no_metrics"].startswith("before: unreachable")
    assert view["total"]["requests"] == 2
    assert (view["total"]["servers_read"], view["total"]["servers_without_metrics"]) == (1, 2)
    text = render_servers(view)
    lines = {x.split()[0]: x for x in text.splitlines()[1:]}
    assert lines[bare].endswith("   no metrics (before: HTTP 404; after: HTTP 404)")
    assert "no metrics (before: unreachable" in lines[closed]
    assert "requests      2" in lines[sim.url] and "requests      2" in lines["total"]


async def test_plain_eval_output_carries_the_servers_view(tmp_path: Path) -> None:
    async with SimServer() as sim:
        data, flow = _data(tmp_path, 2), _workflow(tmp_path, [sim.url])
        out = tmp_path / "out"
        result = await asyncio.to_thread(_eval, str(data), str(flow), "--out", str(out))
        assert result.exit_code == 0, result.output
        completed = (await sim.stats())["completed"]
        again = await asyncio.to_thread(_eval, str(data), str(flow), "--out", str(out), "--json")
    assert "servers (the servers' own /metrics counters" in result.output
    assert "other client's traffic" in result.output
    line = next(x for x in result.output.splitlines() if x.strip().startswith(sim.url))
    assert f"requests {completed:>6}" in line
    assert next(x for x in result.output.splitlines() if x.strip().startswith("total "))
    # a rerun with every item finished sends nothing and reads no server: it says so
    assert json.loads(again.stdout)["servers"]["not_read"].startswith("no item ran")


async def test_a_router_url_is_read_through_its_replicas(tmp_path: Path) -> None:
    """vllm-router passes /metrics on its own port to one replica it picks: the eval
    reads the replicas it lists (/list_workers) instead, each marked with the router."""
    from concilium.serving.cluster import run_router

    async with SimServer() as a, SimServer() as b, run_router([a.url, b.url]) as router:
        before = [await _counters(a), await _counters(b)]
        data, flow = _data(tmp_path), _workflow(tmp_path, [router.url])
        out = tmp_path / "out"
        result = await asyncio.to_thread(_eval, str(data), str(flow), "--out", str(out), "--json")
        assert result.exit_code == 0, result.output
        after = [await _counters(a), await _counters(b)]

    shown = json.loads(result.stdout)["servers"]
    rows = shown["servers"]
    assert {r["url"] for r in rows} == {a.url, b.url}
    assert {r["router"] for r in rows} == {router.url}
    by_url = {r["url"]: r for r in rows}
    for url, old, new in zip((a.url, b.url), before, after, strict=True):
        assert by_url[url]["requests"] == new[0] - old[0]
    calls = sum(
        json.loads(line)["calls"] for line in (out / "results.jsonl").read_text().splitlines()
    )
    assert shown["total"]["requests"] == calls > 0


def test_a_server_restarted_between_the_readings_has_no_growth_to_show() -> None:
    from concilium.evals._server_metrics import server_view

    old = {"vllm:request_success_total": 9.0, "vllm:prefix_cache_hits_total": 32.0,
           "vllm:prefix_cache_queries_total": 64.0}  # fmt: skip
    new = {"vllm:request_success_total": 2.0, "vllm:prefix_cache_hits_total": 0.0,
           "vllm:prefix_cache_queries_total": 16.0}  # fmt: skip
    grown = {"vllm:request_success_total": 12.0, "vllm:prefix_cache_hits_total": 48.0,
             "vllm:prefix_cache_queries_total": 80.0}  # fmt: skip
    view = server_view(["http://r1/v1", "http://r2/v1"], [old, old], [new, grown])
    restarted, fine = view["servers"]
    assert restarted["no_metrics"].startswith("counters went down")
    assert (fine["requests"], fine["prefix_cache_hits"], fine["prefix_cache_queries"]) == (
        3,
        16,
        16,
    )
    assert fine["hit_rate"] == 1.0 and view["total"]["requests"] == 3
