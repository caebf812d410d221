"""Routing across replicas and per-replica concurrency limits, over real HTTP."""

from __future__ import annotations

import asyncio

from concilium.agents import Agent, ModelSpec
from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
from concilium.agents.sim import Latency, SimConfig
from concilium.serving import SimServer


async def test_least_in_flight_spreads_a_fanout_over_replicas() -> None:
    config = SimConfig(latency=Latency(fixed=0.05))
    async with SimServer(config) as one, SimServer(config) as two:
        spec = ModelSpec("hosted_vllm/concilium-sim", api_base=[one.url, two.url])
        agent = Agent("a", spec)
        await asyncio.gather(*(agent.run("hi", key=f"k{i}") for i in range(20)))
        a, b = await one.stats(), await two.stats()
    assert a["requests"] == 10 and b["requests"] == 10


async def test_max_concurrency_limits_requests_in_flight_per_replica() -> None:
    async with SimServer(SimConfig(latency=Latency(fixed=0.03))) as sim:
        agent = Agent("a", sim.spec(max_concurrency=4))
        token = use_ledger(CallLedger())
        try:
            await asyncio.gather(*(agent.run("hi", key=f"k{i}") for i in range(16)))
        finally:
            reset_ledger(token)
        stats = await sim.stats()
    assert stats["requests"] == 16
    assert stats["max_in_flight"] == 4


async def test_a_wide_fanout_really_runs_concurrently() -> None:
    # The server in its own process, so accepting 64 connections does not wait on
    # the client's event loop.
    async with SimServer(SimConfig(latency=Latency(fixed=0.3)), process=True) as sim:
        agent = Agent("a", sim.spec())
        await asyncio.gather(*(agent.run("hi", key=f"k{i}") for i in range(64)))
        stats = await sim.stats()
    assert stats["max_in_flight"] == 64
