"""``concilium bench cluster``: K replicas behind one ModelSpec, measured in one run.

Replicas are simulated servers in their own processes (test doubles), each serving
at most ``capacity`` requests at a time (the per-replica concurrency limit, as a GPU
server's batch would), ``latency`` seconds each. Reported:

* throughput of K = 1, 2, 4 replicas on the same workload, as a ratio to one
  replica (goal >= 0.9 K);
* the prefix-cache hit rate the servers report for fan-outs (16 questions x 8
  samples) routed with affinity versus round robin, on 4 replicas;
* the same fan-outs on 4 and 8 replicas behind vllm-router (``cache_aware``,
  ``consistent_hash`` on concilium's ``X-Session-ID``, ``round_robin``) beside
  concilium's client-side affinity: hit rate from the servers' counters, requests
  per replica and wall time (skipped, and said, when vllm-router is not installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from concilium._errors import UserError
from concilium.agents import Agent, Capabilities, ModelSpec, aclose
from concilium.agents.sim import Latency, SimConfig
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving import SimServer
from concilium.serving.cluster import router_binary, run_router

ROUTER_MODES = (
    "client affinity",
    "router cache_aware",
    "router consistent_hash",
    "router round_robin",
)


@contextlib.asynccontextmanager
async def _replicas(k: int, latency: float) -> AsyncIterator[list[SimServer]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(SimServer(SimConfig(seed=i, latency=Latency(fixed=latency)), process=True))
               for i in range(k)]  # fmt: skip


async def _throughput(k: int, requests: int, capacity: int, latency: float) -> float:
    async with _replicas(k, latency) as servers:
        spec = ModelSpec(
            "hosted_vllm/concilium-sim", api_base=[s.url for s in servers], max_concurrency=capacity
        )
        agent = Agent("load", spec, max_tokens=16)
        started = time.perf_counter()
        await asyncio.gather(*(agent.run(f"What is {i} + 1?") for i in range(requests)))
        elapsed = time.perf_counter() - started
        await aclose()
    return requests / elapsed


async def _hit_rate(
    routing: Literal["least_loaded", "affinity", "round_robin"],
    k: int = 4,
    questions: int = 16,
    samples: int = 8,
    router: str | None = None,
) -> dict[str, Any]:
    """Fan-outs on ``k`` replicas, routed by concilium (``routing``) or, with
    ``router`` (a policy), by vllm-router in front of them."""
    async with _replicas(k, 0.02) as servers, contextlib.AsyncExitStack() as stack:
        urls = [s.url for s in servers]
        if router:
            front = await stack.enter_async_context(run_router(urls, policy=router))
            urls = [front.url]
        spec = ModelSpec("hosted_vllm/concilium-sim", api_base=urls, routing=routing,
                         capabilities=Capabilities(n=False))  # fmt: skip
        started = time.perf_counter()
        await asyncio.gather(*(run(self_consistency(Agent("s", spec), samples=samples), f"Question {q}: what is {q} * 3?")
                               for q in range(questions)))  # fmt: skip
        seconds = time.perf_counter() - started
        stats = [await s.stats() for s in servers]
        await aclose()
    queries = sum(s["prefix_cache_queries"] for s in stats)
    return {"hit_rate": round(sum(s["prefix_cache_hits"] for s in stats) / queries, 3),
            "requests_per_replica": [s["requests"] for s in stats], "seconds": round(seconds, 2)}  # fmt: skip


def _router_modes() -> list[dict[str, Any]] | str:
    """Client-side affinity vs vllm-router's policies on 4 and 8 simulated replicas."""
    try:
        router_binary()
    except UserError as exc:
        return f"router modes skipped: {exc}"
    rows = []
    for k in (4, 8):
        for mode in ROUTER_MODES:
            where, policy = mode.split(" ")
            figures = asyncio.run(
                _hit_rate("affinity", k, router=policy if where == "router" else None)
            )
            rows.append({"replicas": k, "mode": mode, **figures})
    return rows


def main(
    *, requests: int = 512, capacity: int = 16, latency: float = 0.1, json_file: str | None = None
) -> dict[str, Any]:
    base = asyncio.run(_throughput(1, requests, capacity, latency))
    rows = [{"replicas": 1, "requests_per_s": round(base, 1), "ratio": 1.0, "goal": 0.9}]
    for k in (2, 4):
        rate = asyncio.run(_throughput(k, requests, capacity, latency))
        rows.append(
            {
                "replicas": k,
                "requests_per_s": round(rate, 1),
                "ratio": round(rate / base, 2),
                "goal": round(0.9 * k, 1),
            }
        )
    affinity = {routing: asyncio.run(_hit_rate(routing)) for routing in ("affinity", "round_robin")}
    print(
        f"{requests} requests, {capacity} at a time per replica, {latency * 1000:.0f} ms each (simulated servers)"
    )
    print("| replicas | requests/s | ratio to one | goal |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['replicas']} | {r['requests_per_s']} | {r['ratio']} | >= {r['goal']} |")
    print("\nprefix-cache hit rate, 16 fan-outs of 8 samples on 4 replicas")
    print("| routing | hit rate | requests per replica |\n| --- | --- | --- |")
    for routing, f in affinity.items():
        print(f"| {routing} | {f['hit_rate']} | {f['requests_per_replica']} |")
    routers = _router_modes()
    print("\nthe same fan-outs behind vllm-router vs concilium's client-side affinity")
    if isinstance(routers, str):
        print(routers)
    else:
        print("| replicas | mode | hit rate | requests per replica | seconds |")
        print("| --- | --- | --- | --- | --- |")
        for r in routers:
            print(f"| {r['replicas']} | {r['mode']} | {r['hit_rate']} | {r['requests_per_replica']} | {r['seconds']} |")  # fmt: skip
    figures = {"throughput": rows, "prefix_cache": affinity, "routers": routers}
    emit(figures, json_file)
    return figures
