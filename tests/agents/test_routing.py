"""Routing among replicas, with simulated servers as the replicas (each counts what
it received): spreading load, prefix affinity, failover, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

from concilium.agents import Agent, Capabilities, ModelSpec
from concilium.agents._model import pool_for
from concilium.agents.sim import Latency, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving import SimServer


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within_s: float = 10.0
) -> None:
    """Poll ``condition`` (sync or async) until it holds; fail after ``within_s`` s saying what."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        held = condition()
        if await held if inspect.isawaitable(held) else held:
            return
        assert loop.time() < deadline, f"timed out after {within_s} s waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def replicas(
    count: int, latency: float, process: bool = False
) -> AsyncIterator[list[SimServer]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(SimServer(SimConfig(seed=i, latency=Latency(fixed=latency)), process=process))
                   for i in range(count)]  # fmt: skip
        yield servers


def pool_spec(servers: list[SimServer], **options: object) -> ModelSpec:
    return ModelSpec("hosted_vllm/concilium-sim", api_base=[s.url for s in servers],
                     capabilities=Capabilities(n=False), **options)  # type: ignore[arg-type]  # fmt: skip


async def test_least_loaded_spreads_a_fan_out_evenly() -> None:
    async with replicas(2, 0.1) as servers:
        result = await run(
            self_consistency(Agent("s", pool_spec(servers)), samples=20), "What is 2 + 2?"
        )
        counts = [(await s.stats())["requests"] for s in servers]
    assert counts == [10, 10] and result.calls == 20


async def test_affinity_keeps_a_fan_out_on_one_replica_and_its_prefix_cache() -> None:
    async with replicas(2, 0.05) as servers:
        spec = pool_spec(servers, routing="affinity")
        for question in ("What is 2 + 2?", "What is 3 + 5?", "What is 7 * 6?", "What is 9 - 4?"):
            await run(self_consistency(Agent("s", spec), samples=8), question)
        stats = [await s.stats() for s in servers]
    assert sorted(s["requests"] for s in stats) in (
        [0, 32],
        [8, 24],
        [16, 16],
    )  # whole fan-outs, never split
    assert all(s["requests"] % 8 == 0 for s in stats)
    hits = sum(s["prefix_cache_hits"] for s in stats) / sum(
        s["prefix_cache_queries"] for s in stats
    )
    assert hits > 0.8  # 7 of every 8 prompts found in the cache


async def test_a_replica_killed_mid_run_loses_and_repeats_no_branch() -> None:
    async with replicas(2, 0.5, process=True) as servers:
        spec = pool_spec(servers)
        running = asyncio.ensure_future(
            run(self_consistency(Agent("s", spec), samples=16), "What is 6 * 7?")
        )

        async def both_hold_eight() -> bool:
            return [(await s.stats())["in_flight"] for s in servers] == [8, 8]

        await until(both_hold_eight, "both replicas to hold 8 requests each")
        servers[0].kill()
        result = await running
        survivor = await servers[1].stats()
    assert len(result.transcript) == 16 and sorted(e["sample"] for e in result.transcript) == list(
        range(16)
    )
    assert (
        survivor["requests"] == 16 and survivor["completed"] == 16
    )  # its 8 plus the 8 failed over, once each


async def test_per_replica_concurrency_is_backpressure_not_errors() -> None:
    async with replicas(1, 0.05) as servers:
        result = await run(
            self_consistency(Agent("s", pool_spec(servers, max_concurrency=2)), samples=8), "q"
        )
        stats = await servers[0].stats()
    assert stats["max_in_flight"] == 2 and stats["requests"] == 8 and result.calls == 8


async def test_requests_waiting_at_a_replica_from_other_clients_steer_calls_away() -> None:
    from concilium.agents import aclose as close_sessions

    async with contextlib.AsyncExitStack() as stack:
        busy = await stack.enter_async_context(
            SimServer(SimConfig(latency=Latency(fixed=1.0), max_running=2), process=True)
        )
        idle = await stack.enter_async_context(
            SimServer(SimConfig(latency=Latency(fixed=0.05), max_running=2), process=True)
        )
        other = Agent("someone-else", ModelSpec("hosted_vllm/concilium-sim", api_base=busy.url))
        backlog = [
            asyncio.ensure_future(other.run("hi")) for _ in range(10)
        ]  # 8 of them wait at busy
        spec = ModelSpec(
            "hosted_vllm/concilium-sim", api_base=[busy.url, idle.url], load_metrics=True
        )
        agent = Agent("s", spec)
        await agent.run("warm up")  # starts the /metrics poller
        busy_replica = pool_for(spec).replicas[0]
        await until(lambda: busy_replica.waiting >= 8, "the /metrics poller to read busy's queue")
        await asyncio.gather(*(agent.run(f"q{i}") for i in range(6)))
        ours = (await busy.stats())["by_agent"].get("s", 0)
        for task in backlog:
            task.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)
        await close_sessions()
    assert ours <= 1  # at most the warm-up call, sent before the poller had read anything
