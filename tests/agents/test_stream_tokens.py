"""Streaming token by token with top-k logprobs (``on_token``), and aborting a stream.

Against the simulated server (a test double) over real HTTP on loopback: the streamed
tokens are the ones a whole reply carries, returning ``True`` closes the connection
(the server sees the request cancelled, never completed) and the call returns the
tokens so far, counted as its usage; a cancelled call closes its request too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio

from concilium.agents import Agent, Capabilities, FakeModel, TokenLogprob
from concilium.agents._ledger import CallLedger, reset_ledger, use_ledger
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.serving import SimServer

TEXT = " ".join(f"w{i}" for i in range(40))
# the two tests that cut a stream share one server process (started once, not twice)
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def streaming_server() -> AsyncIterator[SimServer]:
    """The simulated server in its own process, so it notices a closed request by itself:
    the 40 words of TEXT, one token every 20 ms."""
    config = SimConfig(
        latency=Latency(ttft=0, per_token=0.02), rules=[Rule(agent="a", replies=[TEXT])]
    )
    async with SimServer(config, process=True) as sim:
        yield sim


@pytest_asyncio.fixture(loop_scope="module")
async def streaming(streaming_server: SimServer) -> SimServer:
    """``streaming_server`` with its counters and request log reset for this test."""
    await streaming_server.reset()
    return streaming_server


async def _settled(sim: SimServer) -> dict[str, int]:
    """The server's counters once it has noticed every closed request."""
    for _ in range(200):
        stats = await sim.stats()
        if stats["in_flight"] == 0:
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"requests still in flight: {stats}")


async def test_on_token_gets_each_token_with_its_top_k_as_the_whole_reply_has_them() -> None:
    config = SimConfig(
        latency=Latency(ttft=0, per_token=0), rules=[Rule(agent="a", replies=[TEXT])]
    )
    async with SimServer(config) as sim:
        agent = Agent("a", sim.spec(), seed=3).with_options(logprobs=True, top_logprobs=4)
        seen: list[TokenLogprob] = []
        deltas: list[str] = []
        streamed = await agent.run("q", key="s", on_text=deltas.append, on_token=seen.append)
        whole = await agent.run("q", key="w")
        body = (await sim.requests())[0]["body"]
    assert body["stream"] is True and body["top_logprobs"] == 4
    assert [t.token for t in seen] == TEXT.split() and all(len(t.top) == 4 for t in seen)
    assert tuple(seen) == streamed.logprobs == whole.logprobs  # same seed, same draws
    assert "".join(deltas) == streamed.text == TEXT and streamed.finish_reasons == ("stop",)


async def test_a_completion_mode_stream_passes_its_tokens_on_as_a_chat_stream_does() -> None:
    """A base model's ``/v1/completions`` stream carries its logprobs in the legacy
    parallel lists; they reach ``on_token`` (they used to be dropped: no token, no cut)."""
    config = SimConfig(
        latency=Latency(ttft=0, per_token=0), rules=[Rule(agent="a", replies=[TEXT])]
    )
    async with SimServer(config) as sim:
        spec = replace(sim.spec(), capabilities=Capabilities(mode="completion", n=False))
        agent = Agent("a", spec, seed=3).with_options(logprobs=True, top_logprobs=3)
        seen: list[TokenLogprob] = []
        streamed = await agent.run("q", key="s", on_token=seen.append)
        whole = await agent.run("q", key="w")
        first = (await sim.requests())[0]
    assert "completions" in first["endpoint"] and "chat" not in first["endpoint"]
    assert "prompt" in first["body"]
    assert first["body"]["stream"] is True and first["body"]["logprobs"] == 3
    assert [t.token for t in seen] == TEXT.split() and all(len(t.top) == 3 for t in seen)
    assert tuple(seen) == streamed.logprobs == whole.logprobs  # same seed, same draws


async def test_returning_true_aborts_the_request_and_its_tokens_count_as_usage(
    streaming: SimServer,
) -> None:
    ledger = CallLedger()
    token = use_ledger(ledger)
    sim = streaming
    try:
        agent = Agent("a", sim.spec()).with_options(logprobs=True, top_logprobs=2)
        seen: list[str] = []

        def five(t: TokenLogprob) -> bool:
            seen.append(t.token)
            return len(seen) == 5

        reply = await agent.run("q", key="abort", on_token=five)
        stats = await _settled(sim)
    finally:
        reset_ledger(token)
    assert seen == TEXT.split()[:5]
    assert reply.text == " ".join(TEXT.split()[:5]) and reply.finish_reasons == ("abort",)
    assert reply.logprobs is not None and len(reply.logprobs) == 5
    assert reply.usage.completion_tokens == 5 and ledger.usage.completion_tokens == 5
    # the server saw its client go: cancelled, never completed (40 tokens unsent)
    assert stats["requests"] == 1 and stats["cancelled"] == 1 and stats["completed"] == 0


async def test_cancelling_a_streamed_call_closes_its_request(streaming: SimServer) -> None:
    sim = streaming
    agent = Agent("a", sim.spec()).with_options(logprobs=True, top_logprobs=2)
    first = asyncio.Event()
    call = asyncio.create_task(agent.run("q", key="c", on_token=lambda t: first.set()))
    await first.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    stats = await _settled(sim)
    assert stats["cancelled"] == 1 and stats["completed"] == 0


async def test_a_transport_that_cannot_stream_tokens_passes_them_after_the_call() -> None:
    fake = FakeModel({"a": "x y z"})
    seen: list[str] = []
    agent = Agent("a", fake.spec(), logprobs=True)
    reply = await agent.run("q", on_token=lambda t: seen.append(t.token))
    assert reply.text == "x y z" and seen == [t.token for t in reply.logprobs or ()] != []
