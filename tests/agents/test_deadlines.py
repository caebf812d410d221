"""A hung whole (non-streamed) request is abandoned at a deadline learned from the
replica's own replies and retried, at the default settings (``timeout`` stays 120 s):
over real HTTP to simulated servers (test doubles) that leave chosen requests hanging.
What is checked is structure, counted at the servers: the hung request was abandoned
(the server saw it cancelled), one more request was sent, the call completed."""

from __future__ import annotations

import asyncio
from typing import Any

from concilium.agents import Agent, aclose
from concilium.agents.sim import Faults, Latency, Rule, SimConfig
from concilium.serving import SimServer

HANG = Faults(hang_rate=1.0, hang_seconds=30)  # then it answers: the old client waited
ONE_HANG = Faults(hang_seconds=30)  # for hang_next


def app_of(sim: SimServer) -> Any:
    assert sim.app is not None  # in process: the test flips its faults directly
    return sim.app


def hang_next(sim: SimServer) -> None:
    """Make the next request to ``sim`` hang (``HANG.hang_seconds``), and only that one."""
    app = app_of(sim)
    draw = app.fault

    def once() -> str:
        app.fault = draw
        return "hang"

    app.fault = once


async def test_a_hung_request_is_abandoned_and_retried_and_the_call_completes() -> None:
    async with SimServer(SimConfig(seed=1, latency=Latency(fixed=0.2), faults=ONE_HANG)) as sim:
        agent = Agent("a", sim.spec(), max_tokens=32)  # the spec's defaults: timeout 120 s
        for _ in range(3):  # the replica's pace: 0.2 s a reply
            await agent.run("What is 2 + 2?")
        hang_next(sim)
        reply = await agent.run("What is 3 + 3?")
        stats = (await sim.stats(), await aclose())[0]
    assert reply.texts[0].startswith("[simulated reply]")
    assert stats["cancelled"] >= 1  # the hung request was given up, not waited out
    assert stats["requests"] == 3 + 1 + stats["cancelled"]  # each given up once, then retried


async def test_a_hung_request_is_retried_on_another_replica() -> None:
    config = SimConfig(seed=2, latency=Latency(fixed=0.2))
    async with SimServer(config) as a, SimServer(config.model_copy(deep=True)) as b:
        spec = a.spec(routing="round_robin").with_api_base([a.url, b.url])
        agent = Agent("a", spec, max_tokens=32)
        for _ in range(4):  # both replicas learn their pace
            await agent.run("What is 2 + 2?")
        warm_a, warm_b = (await a.stats())["requests"], (await b.stats())["requests"]
        assert warm_a >= 1 and warm_b >= 1
        app_of(a).config.faults = HANG  # a hangs from now on; b is well
        replies = await asyncio.gather(*(agent.run(f"What is {k} + 1?") for k in range(2)))
        sick, well = await a.stats(), await b.stats()
        await aclose()
    assert all(r.texts[0].startswith("[simulated reply]") for r in replies)
    assert sick["completed"] == warm_a and sick["cancelled"] >= 1  # its hung one abandoned
    assert sick["requests"] - warm_a == sick["cancelled"]
    assert well["requests"] - warm_b == 2  # both calls answered there


async def test_a_hung_first_request_is_given_a_deadline_once_its_siblings_reply() -> None:
    # no reply from this replica yet: the first request has only `timeout` (120 s)
    # until a sibling's reply sets the pace
    async with SimServer(SimConfig(seed=3, latency=Latency(fixed=0.2), faults=ONE_HANG)) as sim:
        agent = Agent("a", sim.spec(), max_tokens=32)
        hang_next(sim)  # the first of three sent together
        await asyncio.gather(*(agent.run(f"What is {k} + 2?") for k in range(3)))
        stats = await sim.stats()
        await aclose()
    assert stats["cancelled"] >= 1
    assert stats["requests"] == 3 + stats["cancelled"]


async def test_a_long_reply_gets_a_deadline_scaled_to_its_max_tokens() -> None:
    # replies take 0.02 s + 0.01 s a word; the pace is learned on 8-word replies
    # (0.1 s), then a 150-word reply (1.5 s) asks for max_tokens=200: its deadline
    # grows with its length, so it is not cut as hung and sent again
    long_reply = " ".join(["word"] * 150)
    config = SimConfig(
        seed=4,
        latency=Latency(ttft=0.02, per_token=0.01),
        rules=[Rule(agent="writer", replies=[long_reply])],
    )
    async with SimServer(config) as sim:
        short = Agent("short", sim.spec(), max_tokens=8)
        for _ in range(3):
            await short.run("What is 2 + 2?")
        reply = await Agent("writer", sim.spec(), max_tokens=200).run("Write at length.")
        stats = await sim.stats()
        await aclose()
    assert reply.texts[0] == long_reply
    assert stats["by_agent"]["writer"] == 1 and stats["cancelled"] == 0
