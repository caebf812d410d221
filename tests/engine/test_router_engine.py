"""Two replicas of the embedded engine behind vllm-router (issue 23), read by vLLM's
own Prometheus counters: one cluster start (two one-core replicas, about two minutes
here) for the whole check, so it is one test. It is also the launcher's engine test:
the pool file it writes holds a URL that answers, and every process it started is
gone when it exits.

The router starts with the cluster and stops with it; the fan-out's key reaches the
router (under ``consistent_hash`` every branch of a fan-out lands on one replica, as
the replicas' ``vllm:request_success`` counters show); ``bench cluster``'s engine rows
read each replica's ``vllm:prefix_cache_*`` counters, checked here against a hand
count of vLLM's 128-token blocks, and ``cache_aware`` gets the token IDs it routes on
from the replicas (started with ``--enable-scale-out``); a killed replica is routed
around.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import yaml
from processes import gone

from concilium.agents import Agent, Capabilities, ModelSpec, aclose
from concilium.bench.cluster import counter, engine_modes
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving.cluster import ClusterSpec, launch_cluster, read_metrics

NAME = "gemma-3-270m"
BLOCK = 128  # vLLM's CPU build: the cache block of this model (vllm:cache_config_info)


async def _served(urls: list[str]) -> list[float]:
    """Requests each replica finished, from its own /metrics."""
    async with aiohttp.ClientSession() as session:
        texts = [await (await session.get(u.removesuffix("/v1") + "/metrics")).text() for u in urls]
    return [counter(read_metrics(t), "vllm:request_success") for t in texts]


async def test_two_engine_replicas_behind_vllm_router(tmp_path: Path) -> None:
    spec = ClusterSpec.model_validate({"models": [{"name": NAME, "model": "gemma-3-270m", "server": "engine", "replicas": 2}],
                                       "router": "consistent_hash", "deadline": 600, "max_restarts": 0})  # fmt: skip
    log: list[str] = []
    async with launch_cluster(spec, pool_file=tmp_path / "pool.yaml", log=log.append) as cluster:
        router = cluster.routers[NAME]
        replicas = [p.url for p in cluster.plans]
        pids = [cluster.processes[i].pid for i in range(2)]
        # the pool file the launcher wrote holds the router's one URL, and it answers
        entry = yaml.safe_load((tmp_path / "pool.yaml").read_text())["models"][NAME]
        assert entry["api_base"] == [router.url], entry
        pooled = ModelSpec(entry["model"], api_base=entry["api_base"],
                           capabilities=Capabilities(**entry["capabilities"]))  # fmt: skip
        probe = await Agent("probe", pooled, max_tokens=8, temperature=0.0).run(
            "The capital of France is"
        )
        assert probe.usage.completion_tokens > 0 and probe.text
        model = ModelSpec(f"hosted_vllm/{NAME}", api_base=router.url, timeout=300,
                          capabilities=Capabilities(n=False))  # fmt: skip
        agent = Agent("s", model, max_tokens=4, temperature=0.8)

        # the key reaches the router: each fan-out's 3 branches land on one replica
        for question in ("The capital of France is", "2 + 2 =", "A synonym of big is"):
            before = await _served(replicas)
            result = await run(self_consistency(agent, samples=3, answer="last_number"), question)
            grown = sorted(a - b for a, b in zip(await _served(replicas), before, strict=True))
            assert result.calls == 3 and grown == [0, 3], (question, grown)

        # bench cluster's engine rows, one fan-out of 2 per mode on the replicas:
        # a ~614-token prompt is 4 full blocks; kept together the second request hits
        # all 4 (512 tokens), spread one per replica nothing hits
        modes = ("client affinity", "router round_robin", "router cache_aware")
        together, spread, cache_aware = await engine_modes(replicas, 1, 2, modes, tag="t")
        assert together["calls"] == spread["calls"] == 2
        assert sorted(together["requests_per_replica"]) == [0, 2]
        assert spread["requests_per_replica"] == [1, 1]
        prompt = together["prompt_tokens"] // 2
        assert 4 * BLOCK < prompt < 5 * BLOCK, prompt
        assert sum(together["prefix_cache_hits"]) == 4 * BLOCK
        assert sum(together["prefix_cache_queries"]) == together["prompt_tokens"]
        assert together["hit_rate"] == round(4 * BLOCK / (2 * prompt), 3)
        assert spread["hit_rate"] == 0.0 and spread["hit_rate_per_replica"] == [0.0, 0.0], (
            together, spread)  # fmt: skip
        assert spread["router_requests_per_worker"] == [1, 1]
        assert together["ttft_mean_s"] > 0 and spread["ttft_mean_s"] > 0
        # the replicas (started for a router) give cache_aware the token IDs it routes on
        decisions = cache_aware["router_prefix_decisions"]
        assert sum(decisions.values()) == 2 and "missing_tokens" not in decisions, decisions

        # a killed replica is routed around: runs keep completing through the router
        cluster.processes[0].kill()
        results = [await run(self_consistency(agent, samples=2, answer="last_number"), f"{i} + 1 =")
                   for i in range(4)]  # fmt: skip
        assert all(r.calls == 2 for r in results)
        router_pid = router.process.pid
    assert any("policy consistent_hash" in line for line in log)
    assert gone(router_pid) and all(gone(pid) for pid in pids)  # stopped with the cluster
    await aclose()
