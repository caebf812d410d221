"""vllm-router in front of replicas (issue 23): the real ``vllm-router`` binary (the
``router`` extra) on loopback, in front of simulated servers (a test double, not a
model) each in its own process.

It starts and stops with the cluster and the pool file holds its one URL; the key of a
fan-out reaches the replicas; under injected 503s the requests the replicas count are
concilium's attempts, not attempts times the router's retries; a killed replica is
routed around.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from processes import gone

from concilium.agents import Agent, Capabilities, ModelSpec
from concilium.agents.sim import Faults, Latency, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving import SimServer
from concilium.serving.cluster import ClusterSpec, Router, launch_cluster, run_router

ROOT = Path(__file__).resolve().parents[2]


def spec_for(url: str) -> ModelSpec:
    return ModelSpec("hosted_vllm/concilium-sim", api_base=url, timeout=10,
                     capabilities=Capabilities(n=False))  # fmt: skip


@contextlib.asynccontextmanager
async def routed(
    configs: list[SimConfig], policy: str
) -> AsyncIterator[tuple[list[SimServer], Router]]:
    async with contextlib.AsyncExitStack() as stack:
        sims = [
            await stack.enter_async_context(SimServer(c, process=True, deadline=60))
            for c in configs
        ]
        router = await stack.enter_async_context(
            run_router([s.url for s in sims], policy=policy, notice=lambda _: None)
        )
        yield sims, router


async def test_the_cluster_starts_the_router_the_pool_file_holds_its_url_and_it_stops(
    tmp_path: Path,
) -> None:
    cluster = ClusterSpec.model_validate({"models": [{"name": "concilium-sim", "model": "sim", "server": "sim",
                                                      "replicas": 2}], "deadline": 60})  # fmt: skip
    log: list[str] = []
    async with launch_cluster(cluster, pool_file=tmp_path / "pool.yaml", log=log.append) as running:
        router = running.routers["concilium-sim"]
        pool = yaml.safe_load((tmp_path / "pool.yaml").read_text())["models"]["concilium-sim"]
        assert pool["api_base"] == [router.url] and pool["load_metrics"] is False
        assert router.url not in [p.url for p in running.plans]
        result = await run(self_consistency(Agent("s", spec_for(router.url)), samples=4), "1 + 1?")
        async with aiohttp.ClientSession() as s, s.get(router.metrics_url) as r:
            metrics = await r.text()
        router_pid = router.process.pid
    assert result.calls == 4 and result.answer
    assert "vllm_router" in metrics or "vllm:router" in metrics or "router" in metrics
    assert any("policy cache_aware" in line for line in log)
    assert gone(router_pid)


async def test_no_router_keeps_every_replica_url_in_the_pool_file(tmp_path: Path) -> None:
    cluster = ClusterSpec.model_validate({"models": [{"name": "s", "model": "sim", "server": "sim",
                                                      "replicas": 2}], "router": None})  # fmt: skip
    async with launch_cluster(cluster, pool_file=tmp_path / "pool.yaml", log=lambda _: None) as c:
        pool = yaml.safe_load((tmp_path / "pool.yaml").read_text())["models"]["s"]
        assert not c.routers and len(pool["api_base"]) == 2


async def test_a_fan_outs_key_reaches_the_replicas_and_keeps_it_on_one_under_consistent_hash() -> (
    None
):
    configs = [SimConfig(seed=i, latency=Latency(fixed=0.01)) for i in range(2)]
    async with routed(configs, "consistent_hash") as (sims, router):
        agent = Agent("s", spec_for(router.url))
        for question in ("What is 1 + 1?", "What is 2 + 3?", "Name a prime.", "What is 7 * 6?"):
            await run(self_consistency(agent, samples=4), question)
        logs = [await s.requests() for s in sims]
    keys: dict[str, set[int]] = {}
    for i, received in enumerate(logs):
        for request in received:
            assert request["session"], request  # every request carries the key
            keys.setdefault(request["session"], set()).add(i)
    assert len(keys) == 4  # one key per fan-out, the same for its 4 branches
    assert all(len(replicas) == 1 for replicas in keys.values())  # each on one replica
    assert sum(len(r) for r in logs) == 16


async def test_under_injected_503s_the_replicas_count_concilium_attempts_only() -> None:
    # replica 0 answers 503 to its first 6 requests: each is one attempt of a call
    configs = [
        SimConfig(seed=0, latency=Latency(fixed=0.01), faults=Faults(first_errors=6)),
        SimConfig(seed=1, latency=Latency(fixed=0.01)),
    ]
    async with routed(configs, "round_robin") as (sims, router):
        events: list[Any] = []
        graph = self_consistency(Agent("s", spec_for(router.url)), samples=8)
        result = await run(graph, "2+2?", on_event=events.append)
        stats = [await s.stats() for s in sims]
    retries = sum(e["type"] == "call_retry" for e in events)
    # the router's circuit breaker takes replica 0 out after 3 failures (a 4th may be
    # on its way by then), so 3 to 6 of its 503s are seen
    assert result.calls == 8 and 3 <= stats[0]["errors"] <= 6
    # each of concilium's attempts reached a replica once: no retry of the router's
    # on top (with them, concilium would see no 503 and the replicas more requests)
    assert retries == stats[0]["errors"]
    assert sum(s["requests"] for s in stats) == 8 + retries


async def test_a_killed_replica_is_routed_around() -> None:
    configs = [SimConfig(seed=i, latency=Latency(fixed=0.01)) for i in range(2)]
    async with routed(configs, "round_robin") as (sims, router):
        agent = Agent("s", spec_for(router.url))
        await run(self_consistency(agent, samples=4), "What is 1 + 1?")
        sims[0].kill()
        results = [
            await run(self_consistency(agent, samples=4), f"What is {i} + 1?") for i in range(2, 8)
        ]
        alive = await sims[1].stats()
    assert all(r.calls == 4 and r.answer for r in results)
    assert alive["completed"] >= 24  # every later call answered by the live replica


async def test_a_killed_router_is_restarted_on_its_port() -> None:
    configs = [SimConfig(seed=i, latency=Latency(fixed=0.01)) for i in range(2)]
    async with routed(configs, "cache_aware") as (_, router):
        first = router.process.pid
        router.process.kill()
        for _ in range(600):  # a loaded machine: up to a minute
            await asyncio.sleep(0.1)
            if router.process.pid != first and router.process.returncode is None:
                break
        assert router.process.pid != first, "the router was not restarted within 60 s"
        result = await run(self_consistency(Agent("s", spec_for(router.url)), samples=2), "1+1?")
        restarted = router.process.pid
    assert restarted != first and result.calls == 2
    assert gone(restarted)


def test_an_unknown_policy_names_the_choices() -> None:
    from concilium._errors import UserError
    from concilium.serving._router import router_command

    with pytest.raises(UserError, match="'fastest' is not one of cache_aware"):
        router_command("vllm-router", ["http://127.0.0.1:1/v1"], 2, 3, "fastest")


def test_serve_local_with_replicas_prints_the_routers_one_url_and_stops_it(tmp_path: Path) -> None:
    from test_supervisor import _alive, _health, _lines, _wait_for, fake_engine

    fake_engine(tmp_path / "engine")  # the simulated server (a test double) as the engine
    args = [sys.executable, "-P", "-m", "concilium", "serve", "local", "--replicas", "2", "--port", "0"]  # fmt: skip
    env = {**os.environ, "CONCILIUM_ENGINE_HOME": str(tmp_path / "engine")}
    proc = subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    try:
        said = []
        for line in proc.stdout:
            said.append(line)
            if "api_base" in line:
                break
        urls = said[-1].split("api_base ")[1].split()
        port = urls[0].removesuffix("/v1").rsplit(":", 1)[1]
        assert len(urls) == 1 and any(f"vllm-router (port {port}," in s for s in said), said
        pids = tmp_path / "engine" / "pids"
        answers = [_chat(urls[0], f"What is {i} + 1?") for i in range(4)]
        os.kill(int(_lines(pids)[0]), signal.SIGKILL)  # one replica dies: runs complete
        graph = self_consistency(Agent("s", spec_for(urls[0])), samples=4)
        results = [asyncio.run(run(graph, f"What is {i} + 2?")) for i in range(4)]
        answers += [r.answer for r in results if r.calls == 4]
        _wait_for("the router to answer", lambda: _health(urls[0]), proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed test stops it with Ctrl-C: no orphaned router
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0 and len(answers) == 8 and all(answers)
    assert not _health(urls[0])  # the router stopped with the engine
    assert not [pid for pid in _lines(pids) if _alive(pid)]


def _chat(url: str, question: str) -> str:
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": question}]}
    request = urllib.request.Request(url + "/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["choices"][0]["message"]["content"]


async def test_backend_pointed_at_a_running_vllm_router_runs_a_workflow_with_its_keys() -> None:
    configs = [SimConfig(seed=i, latency=Latency(fixed=0.01)) for i in range(2)]
    async with routed(configs, "consistent_hash") as (sims, router):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "concilium", "run", "examples/self_consistency.yaml",
            "--backend", router.url, "-i", "What is 2 + 3?", cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        logs = [await s.requests() for s in sims]
    assert proc.returncode == 0, err.decode()
    assert out.strip() and "Traceback" not in err.decode()
    received = logs[0] + logs[1]
    assert received and all(r["session"] for r in received)  # the key reached the replicas


# what two vLLM replicas' /metrics served (trimmed), read before and after a mode
REPLICA_BEFORE = """# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="gemma-3-270m"} 1000.0
vllm:prefix_cache_queries_created{engine="0",model_name="gemma-3-270m"} 1.7966103840174e+09
vllm:prefix_cache_hits_total{engine="0",model_name="gemma-3-270m"} 256.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="gemma-3-270m"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="gemma-3-270m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="gemma-3-270m"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="gemma-3-270m"} 2.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="gemma-3-270m"} 4.0
vllm:cache_config_info{block_size="128",note="a } and a \\" in a label"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="gemma-3-270m"} NaN
"""
REPLICA_AFTER = """vllm:prefix_cache_queries_total{engine="0",model_name="gemma-3-270m"} 3456.0
vllm:prefix_cache_hits_total{engine="0",model_name="gemma-3-270m"} 1792.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="gemma-3-270m"} 6.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="gemma-3-270m"} 2.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="gemma-3-270m"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="gemma-3-270m"} 8.0
"""


def test_read_metrics_sums_labels_and_the_difference_gives_a_hand_computed_hit_rate() -> None:
    from concilium.bench.cluster import counter, metrics_delta
    from concilium.serving.cluster import read_metrics

    before = read_metrics(REPLICA_BEFORE)
    assert before["vllm:request_success_total"] == 4.0  # stop 3 + length 1
    assert before["vllm:cache_config_info"] == 1.0  # a quoted '}' does not end the labels
    grown = metrics_delta(before, read_metrics(REPLICA_AFTER))
    # by hand: hits 1792 - 256 = 1536 of 3456 - 1000 = 2456 queried tokens
    hits, queries = counter(grown, "vllm:prefix_cache_hits"), counter(grown, "vllm:prefix_cache_queries")  # fmt: skip
    assert (hits, queries) == (1536.0, 2456.0) and round(hits / queries, 3) == 0.625
    assert counter(grown, "vllm:request_success") == 4.0  # 8 - 4
    # mean time to first token of these 4 requests: (5.0 - 2.0) / (8 - 4)
    ttft = grown["vllm:time_to_first_token_seconds_sum"] / grown["vllm:time_to_first_token_seconds_count"]  # fmt: skip
    assert ttft == 0.75


def test_read_metrics_by_a_label_gives_the_routers_requests_per_worker() -> None:
    from concilium.serving.cluster import read_metrics

    text = """# TYPE vllm_router_processed_requests_total counter
vllm_router_processed_requests_total{worker="http://127.0.0.1:8001"} 20
vllm_router_processed_requests_total{worker="http://127.0.0.1:8002"} 12
vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="regular",outcome="missing_tokens"} 32
vllm_router_requests_total{route="/v1/chat/completions"} 32
"""
    by_worker = read_metrics(text, by="worker")
    assert by_worker == {
        "vllm_router_processed_requests_total[http://127.0.0.1:8001]": 20.0,
        "vllm_router_processed_requests_total[http://127.0.0.1:8002]": 12.0,
    }
    assert read_metrics(text, by="outcome") == {
        "vllm_router_prefix_routing_decisions_total[missing_tokens]": 32.0
    }


def test_routed_engine_replicas_serve_the_render_endpoint_cache_aware_reads(tmp_path: Path) -> None:
    """vllm-router's cache_aware gets a prompt's token IDs from a replica's
    /v1/chat/completions/render, which vLLM serves only with --enable-scale-out."""
    from test_supervisor import fake_engine

    from concilium.serving._cluster import plan_replicas

    home = fake_engine(tmp_path / "engine")  # an installed engine home (a test double)

    def argvs(router: str | None, replicas: int) -> list[list[str]]:
        spec = ClusterSpec.model_validate({"models": [{"name": "g", "model": "gemma-3-270m", "server": "engine",
                                                       "replicas": replicas}], "router": router})  # fmt: skip
        return [p.argv for p in plan_replicas(spec, ports=iter([8001, 8002]), home=home)]

    assert all(a[-1] == "--enable-scale-out" for a in argvs("cache_aware", 2))
    assert not any("--enable-scale-out" in a for a in argvs(None, 2) + argvs("cache_aware", 1))
