"""``concilium bench cluster``: K replicas behind one ModelSpec, measured in one run.

Simulated replicas are simulated servers in their own processes (test doubles), each
serving at most ``capacity`` requests at a time (the per-replica concurrency limit, as
a GPU server's batch would), ``latency`` seconds each. Reported:

* throughput of K = 1, 2, 4 replicas on the same workload, as a ratio to one
  replica (goal >= 0.9 K);
* the prefix-cache hit rate the servers report for fan-outs (``questions`` x
  ``samples``) routed with affinity versus round robin, on 4 replicas;
* the same fan-outs on 4 and 8 replicas behind vllm-router (``cache_aware``,
  ``consistent_hash`` on concilium's ``X-Session-ID``, ``round_robin``) beside
  concilium's client-side affinity: hit rate from the servers' counters, requests
  per replica and wall time (skipped, and said, when vllm-router is not installed);
* the engine rows: 2 replicas of the embedded engine (vLLM's CPU build, one core
  each) behind the same router policies and beside client-side affinity, on
  few-shot fan-outs whose prompts span several of vLLM's 128-token cache blocks:
  the prefix-cache hit rate from each replica's own ``/metrics`` counters
  (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``, read before and after
  each mode), requests per replica, throughput and the engines' mean time to first
  token (their ``vllm:time_to_first_token_seconds`` histogram). Skipped, and said,
  when the engine or vllm-router is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from concilium._errors import UserError
from concilium.agents import Agent, Capabilities, ModelSpec, aclose
from concilium.agents.sim import Latency, SimConfig
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving import SimServer
from concilium.serving.cluster import ROUTED_REPLICA_ARGS, read_metrics, router_binary, run_router

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


async def _throughput(requests: int, capacity: int, latency: float) -> dict[int, float]:
    """Requests per second on the first 1, 2 and 4 of 4 replicas started once."""
    rates = {}
    async with _replicas(4, latency) as servers:
        for k in (1, 2, 4):
            spec = ModelSpec("hosted_vllm/concilium-sim", api_base=[s.url for s in servers[:k]],
                             max_concurrency=capacity)  # fmt: skip
            agent = Agent("load", spec, max_tokens=16)
            started = time.perf_counter()
            await asyncio.gather(*(agent.run(f"What is {i} + 1?") for i in range(requests)))
            rates[k] = requests / (time.perf_counter() - started)
            await aclose()
    return rates


async def _fan_outs(
    servers: Sequence[SimServer],
    routing: Literal["least_loaded", "affinity", "round_robin"],
    questions: int,
    samples: int,
    router: str | None = None,
) -> dict[str, Any]:
    """Fan-outs on ``servers`` (counters reset first), routed by concilium
    (``routing``) or, with ``router`` (a policy), by vllm-router in front of them."""
    for s in servers:
        await s.reset()
    async with contextlib.AsyncExitStack() as stack:
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


async def _sim_modes(
    k: int, questions: int, samples: int, modes: Sequence[str]
) -> list[dict[str, Any]]:
    """Each mode on the same ``k`` simulated replicas, their counters and caches reset
    between modes (a fresh router for each router mode)."""
    rows = []
    async with _replicas(k, 0.02) as servers:
        for mode in modes:
            where, policy = mode.split(" ")
            routing: Literal["affinity", "round_robin"] = (
                "round_robin" if mode == "client round_robin" else "affinity"
            )
            figures = await _fan_outs(servers, routing, questions, samples,
                                      router=policy if where == "router" else None)  # fmt: skip
            rows.append({"replicas": k, "mode": mode, **figures})
    return rows


CLIENT_MODES = ("client affinity", "client round_robin")


def _sim_rows(
    replicas: Sequence[int], questions: int, samples: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | str]:
    """Client-side affinity vs round robin on 4 simulated replicas, and client-side
    affinity vs vllm-router's policies on each count of ``replicas`` (4 shares the
    client rows' replicas and their affinity row)."""
    try:
        router_binary()
        skipped = None
    except UserError as exc:
        skipped = f"router modes skipped: {exc}"
    routers: list[dict[str, Any]] = []
    client: list[dict[str, Any]] = []
    for k in sorted({4, *replicas} if not skipped else {4}):
        modes = list(CLIENT_MODES) if k == 4 else []
        if k in replicas and not skipped:
            modes += [m for m in ROUTER_MODES if m not in modes]
        rows = asyncio.run(_sim_modes(k, questions, samples, modes))
        if k == 4:
            client = [r for r in rows if r["mode"] in CLIENT_MODES]
        if k in replicas and not skipped:
            routers += [r for r in rows if r["mode"] in ROUTER_MODES]
    return client, skipped or routers


# --- the embedded engine: 2 replicas of vLLM's CPU build, read by their own counters ---

ENGINE_MODES = (
    "client affinity",
    "router cache_aware",
    "router round_robin",
    "router consistent_hash",
)


def engine_prompt(item: int, run_tag: str, shots: int = 32) -> str:
    """A few-shot item: a few-shot block every item shares (16 sums), one of its own
    (``shots`` sums drawn for this item) and the question. About 560 tokens on Gemma 3,
    so four full 128-token cache blocks: the first shared by every item, the rest by
    the branches of one fan-out only. ``run_tag`` opens the prompt so no mode can hit
    blocks an earlier mode left in the replicas' caches."""
    shared = random.Random(0)
    own = random.Random(1000 + item)
    lines = [f"Bench run {run_tag}. Add the numbers."]
    for r in (shared,) * 16 + (own,) * shots:
        a, b = r.randint(10, 99), r.randint(10, 99)
        lines.append(f"{a} + {b} = {a + b}")
    a, b = own.randint(10, 99), own.randint(10, 99)
    return "\n".join([*lines, f"{a} + {b} ="])


def metrics_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Counters' growth between two ``read_metrics`` readings (new in ``after``: from 0)."""
    return {name: value - before.get(name, 0.0) for name, value in after.items()}


def counter(metrics: Mapping[str, float], name: str) -> float:
    """A counter by its name with or without the ``_total`` suffix Prometheus adds."""
    return metrics.get(f"{name}_total", metrics.get(name, 0.0))


async def _scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url.removesuffix("/v1") + "/metrics") as resp:
        resp.raise_for_status()
        return read_metrics(await resp.text())


async def engine_mode(
    urls: Sequence[str],
    mode: str,
    *,
    questions: int,
    samples: int,
    run_tag: str,
    model: str = "gemma-3-270m",
    max_tokens: int = 8,
) -> dict[str, Any]:
    """One mode's fan-outs (all at once) on running engine replicas ``urls``: each
    replica's counters are read before and after, and the figures are their growth."""
    where, policy = mode.split(" ")
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        before = [await _scrape(session, u) for u in urls]
        targets = list(urls)
        front = None
        if where == "router":
            front = await stack.enter_async_context(run_router(urls, policy=policy))
            targets = [front.url]
        spec = ModelSpec(f"hosted_vllm/{model}", api_base=targets, routing="affinity",
                         capabilities=Capabilities(n=False), timeout=300)  # fmt: skip
        agent = Agent("s", spec, max_tokens=max_tokens, temperature=0.8)
        graph = self_consistency(agent, samples=samples, answer="last_number")
        started = time.perf_counter()
        results = await asyncio.gather(
            *(run(graph, engine_prompt(q, run_tag)) for q in range(questions))
        )
        seconds = time.perf_counter() - started
        await aclose()
        grown = [
            metrics_delta(b, await _scrape(session, u)) for b, u in zip(before, urls, strict=True)
        ]
        routed = await _router_figures(session, front.metrics_url) if front else {}
    hits = [counter(g, "vllm:prefix_cache_hits") for g in grown]
    queries = [counter(g, "vllm:prefix_cache_queries") for g in grown]
    ttft_sum = sum(g.get("vllm:time_to_first_token_seconds_sum", 0.0) for g in grown)
    ttft_count = sum(g.get("vllm:time_to_first_token_seconds_count", 0.0) for g in grown)
    tokens = sum(counter(g, "vllm:generation_tokens") for g in grown)
    calls = sum(r.calls for r in results)
    return {
        "replicas": len(urls),
        "mode": mode,
        "hit_rate": round(sum(hits) / sum(queries), 3) if sum(queries) else None,
        "hit_rate_per_replica": [
            round(h / q, 3) if q else None for h, q in zip(hits, queries, strict=True)
        ],
        "prefix_cache_hits": [int(h) for h in hits],
        "prefix_cache_queries": [int(q) for q in queries],
        "requests_per_replica": [int(counter(g, "vllm:request_success")) for g in grown],
        "prompt_tokens": int(sum(counter(g, "vllm:prompt_tokens") for g in grown)),
        "calls": calls,
        "seconds": round(seconds, 2),
        "requests_per_s": round(calls / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "ttft_mean_s": round(ttft_sum / ttft_count, 3) if ttft_count else None,
        **routed,
    }


async def _router_figures(session: aiohttp.ClientSession, metrics_url: str) -> dict[str, Any]:
    """What the router says it did: requests per worker, and how its prefix routing
    decided (``vllm_router_prefix_routing_decisions_total`` by outcome)."""
    async with session.get(metrics_url) as resp:
        text = await resp.text()
    workers = read_metrics(text, by="worker")
    outcomes = read_metrics(text, by="outcome")
    prefix = "vllm_router_prefix_routing_decisions_total["
    return {
        "router_requests_per_worker": [
            int(v) for k, v in sorted(workers.items())
            if k.startswith("vllm_router_processed_requests_total[")
        ],
        "router_prefix_decisions": {
            k.removeprefix(prefix).rstrip("]"): int(v) for k, v in outcomes.items() if k.startswith(prefix)
        },
    }  # fmt: skip


async def engine_modes(
    urls: Sequence[str],
    questions: int,
    samples: int,
    modes: Sequence[str] = ENGINE_MODES,
    tag: str = "",
) -> list[dict[str, Any]]:
    """Every mode in turn on the same running replicas, each with its own run tag
    (``tag`` + its number: pass a new ``tag`` to run them again on the same replicas)."""
    return [
        await engine_mode(urls, mode, questions=questions, samples=samples, run_tag=f"{tag}{i + 1}")
        for i, mode in enumerate(modes)
    ]


def _engine_rows(questions: int, samples: int) -> list[dict[str, Any]] | str:
    """2 embedded-engine replicas (one core each) started for these rows."""
    from concilium.serving.engine import EngineHome, local_engine

    try:
        router_binary()
        EngineHome().require()
    except UserError as exc:
        return f"engine rows skipped: {exc}"

    async def go() -> list[dict[str, Any]]:
        # as serve local starts them: cache_aware gets token IDs from their render endpoint
        async with local_engine(2, max_restarts=0, extra_args=ROUTED_REPLICA_ARGS) as engine:
            return await engine_modes(engine.urls, questions, samples)

    return asyncio.run(go())


def _print_engine(rows: list[dict[str, Any]] | str, questions: int, samples: int) -> None:
    print(
        f"\n{questions} few-shot fan-outs of {samples} (about 560-token prompts, all at once) on 2 "
        "replicas of the embedded engine (vLLM CPU, Gemma 3 270M base, one core each); hit rate "
        "from each replica's vllm:prefix_cache_hits / vllm:prefix_cache_queries"
    )
    if isinstance(rows, str):
        print(rows)
        return
    print("| mode | hit rate | per replica | requests per replica | requests/s | tokens/s "
          "| mean TTFT (s) | seconds | router's prefix decisions |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    for r in rows:
        print(f"| {r['mode']} | {r['hit_rate']} | {r['hit_rate_per_replica']} | {r['requests_per_replica']} "
              f"| {r['requests_per_s']} | {r['tokens_per_s']} | {r['ttft_mean_s']} | {r['seconds']} "
              f"| {r.get('router_prefix_decisions', '')} |")  # fmt: skip


def main(
    *,
    requests: int = 512,
    capacity: int = 16,
    latency: float = 0.1,
    questions: int = 16,
    samples: int = 8,
    router_replicas: Sequence[int] = (4, 8),
    engine_questions: int = 16,
    engine_samples: int = 4,
    json_file: str | None = None,
) -> dict[str, Any]:
    rates = asyncio.run(_throughput(requests, capacity, latency))
    rows = [{"replicas": k, "requests_per_s": round(rate, 1), "ratio": round(rate / rates[1], 2),
             "goal": round(0.9 * k, 1)} for k, rate in rates.items()]  # fmt: skip
    client, routers = _sim_rows(router_replicas, questions, samples)
    affinity = {r["mode"].split(" ")[1]: {k: r[k] for k in ("hit_rate", "requests_per_replica", "seconds")}
                for r in client}  # fmt: skip
    print(
        f"{requests} requests, {capacity} at a time per replica, {latency * 1000:.0f} ms each (simulated servers)"
    )
    print("| replicas | requests/s | ratio to one | goal |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['replicas']} | {r['requests_per_s']} | {r['ratio']} | >= {r['goal']} |")
    print(f"\nprefix-cache hit rate, {questions} fan-outs of {samples} samples on 4 replicas")
    print("| routing | hit rate | requests per replica |\n| --- | --- | --- |")
    for routing, f in affinity.items():
        print(f"| {routing} | {f['hit_rate']} | {f['requests_per_replica']} |")
    print("\nthe same fan-outs behind vllm-router vs concilium's client-side affinity")
    if isinstance(routers, str):
        print(routers)
    else:
        print("| replicas | mode | hit rate | requests per replica | seconds |")
        print("| --- | --- | --- | --- | --- |")
        for r in routers:
            print(f"| {r['replicas']} | {r['mode']} | {r['hit_rate']} | {r['requests_per_replica']} | {r['seconds']} |")  # fmt: skip
    engine: list[dict[str, Any]] | str = (
        _engine_rows(engine_questions, engine_samples)
        if engine_questions
        else "engine rows skipped: --engine-questions 0"
    )
    _print_engine(engine, engine_questions, engine_samples)
    figures = {"throughput": rows, "prefix_cache": affinity, "routers": routers, "engine": engine}
    emit(figures, json_file)
    return figures
