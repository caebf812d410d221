"""Budgets under fan-out, over real HTTP to the simulated server: a call reserves its
worst case before it is sent, so no budget is exceeded however wide or deep the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, Capabilities, FakeModel, Usage, aclose
from concilium.agents._budget import prompt_bound
from concilium.agents.ledger import CallLedger, CallRecord, reset_ledger, use_ledger
from concilium.agents.sim import Latency, SimConfig
from concilium.graphs import as_agent, partial_result, run
from concilium.graphs.patterns import debate, mixture_of_agents, self_consistency
from concilium.serving import SimServer

ONE_BY_ONE = Capabilities(n=False)  # n samples are n requests, sent side by side


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(seed=5, latency=Latency(fixed=0.02))) as sim:
        yield sim
        await aclose()


def spent(stats: dict[str, Any]) -> int:
    """Tokens as the server counted them (cancelled requests included)."""
    return int(stats["prompt_tokens"]) + int(stats["completion_tokens"])


@pytest.mark.parametrize("max_tokens", [64, None])
async def test_a_64_way_self_consistency_never_exceeds_its_token_budget(
    server: SimServer, max_tokens: int | None
) -> None:
    solver = Agent("solver", server.spec(capabilities=ONE_BY_ONE), max_tokens=max_tokens)
    with pytest.raises(BudgetExceeded, match="tokens used") as info:
        await run(self_consistency(solver, samples=64), "What is 12 * 7?",
                  budget=Budget(max_tokens=500))  # fmt: skip
    stats = await server.stats()
    assert 2 <= stats["requests"] < 64  # it made progress, then stopped before the end
    assert spent(stats) <= 500
    done = partial_result(info.value)
    assert done is not None and done.usage.total_tokens <= 500
    assert "the limit is 500" in str(info.value) and "max_tokens" in str(info.value)


async def test_one_request_of_64_samples_is_refused_before_it_is_sent(server: SimServer) -> None:
    solver = Agent("solver", server.spec(), max_tokens=64)  # n=64 in one request
    with pytest.raises(BudgetExceeded, match="0 tokens used, the limit is 500"):
        await run(self_consistency(solver, samples=64), "What is 12 * 7?",
                  budget=Budget(max_tokens=500))  # fmt: skip
    assert (await server.stats())["requests"] == 0


def two_ensembles(server: SimServer, samples: int, capabilities: Capabilities) -> Any:
    spec = server.spec(capabilities=capabilities)
    crowds = [
        as_agent(self_consistency(Agent(name, spec), samples=samples, name=f"{name}_vote"), name)
        for name in ("red", "blue")
    ]
    return debate(crowds, rounds=2)


async def test_max_calls_holds_on_a_debate_of_two_nested_ensembles(server: SimServer) -> None:
    graph = two_ensembles(server, samples=4, capabilities=ONE_BY_ONE)
    with pytest.raises(BudgetExceeded, match="8 calls used and 2 reserved by calls in flight"):
        await run(graph, "What is 12 * 7?", budget=Budget(max_calls=10))
    stats = await server.stats()
    # 8 in the first round; of the second round's 8, two are reserved and the third is
    # refused, which cancels the two (sent or not: they count as spent)
    assert 8 <= stats["requests"] <= 10


async def test_count_samples_makes_an_n_request_cost_n_calls(server: SimServer) -> None:
    graph = two_ensembles(server, samples=8, capabilities=Capabilities(n=True))
    with pytest.raises(BudgetExceeded, match="needs up to 8"):
        await run(graph, "What is 12 * 7?", budget=Budget(max_calls=10, count_samples=True))
    assert (await server.stats())["requests"] == 1  # one n=8 request; the other does not fit
    # by default a request is one call, whatever its n: both rounds fit in 4 calls
    result = await run(graph, "What is 12 * 7?", budget=Budget(max_calls=4))
    assert result.calls == 4


async def test_a_mixture_of_agents_never_exceeds_its_token_budget(server: SimServer) -> None:
    spec = server.spec()
    proposers = [Agent(f"p{i}", spec, max_tokens=40) for i in range(4)]
    graph = mixture_of_agents(proposers, Agent("agg", spec, max_tokens=60), layers=3)
    with pytest.raises(BudgetExceeded, match="tokens"):  # the whole run takes ~670 tokens
        await run(graph, "What is 12 * 7?", budget=Budget(max_tokens=500))
    stats = await server.stats()
    assert stats["requests"] >= 4 and spent(stats) <= 500


async def test_a_call_waits_for_calls_in_flight_instead_of_failing(server: SimServer) -> None:
    # 8 side-by-side calls of up to ~45 tokens on a 200-token budget: their worst
    # cases do not fit together, their real usage (~20 tokens each) does.
    solver = Agent("solver", server.spec(capabilities=ONE_BY_ONE), max_tokens=30)
    ledger = CallLedger(budget=Budget(max_tokens=250))
    token = use_ledger(ledger)
    try:
        reply = await solver.run("What is 12 * 7?", n=8)
    finally:
        reset_ledger(token)
    stats = await server.stats()
    assert len(reply.texts) == 8 and spent(stats) <= 250
    assert stats["max_in_flight"] < 8  # some waited for others to settle


async def test_a_call_without_max_tokens_is_capped_to_what_is_left(server: SimServer) -> None:
    question = {"messages": [{"role": "user", "content": "What is 12 * 7?"}]}
    # the prompt's bound and 8 tokens: the reply alone has ~12 words
    ledger = CallLedger(budget=Budget(max_tokens=prompt_bound(question) + 8))
    token = use_ledger(ledger)
    try:
        reply = await Agent("a", server.spec()).run("What is 12 * 7?")
    finally:
        reset_ledger(token)
    assert reply.finish_reasons == ("length",) and reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens <= prompt_bound(question) + 8


async def test_a_call_cancelled_before_it_is_sent_frees_its_reservation() -> None:
    release = asyncio.Event()

    class Gate(FakeModel):
        async def chat(self, *args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await super().chat(*args, **kwargs)

    ledger = CallLedger(budget=Budget(max_calls=1, max_tokens=100))
    token = use_ledger(ledger)
    try:
        agent = Agent("a", Gate().spec(), max_tokens=10)
        sent = asyncio.ensure_future(agent.run("q"))
        await asyncio.sleep(0)
        assert ledger.meter.reserved_calls == 1  # reserved at once, before any await
        sent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sent
        # it reached the transport: a request that was sent counts, at its worst case
        worst = prompt_bound({"messages": [{"role": "user", "content": "q"}]}) + 10
        assert (ledger.meter.used_calls, ledger.meter.used_tokens) == (1, worst)
        assert ledger.meter.reserved_calls == ledger.meter.reserved_tokens == 0
    finally:
        reset_ledger(token)


async def test_a_call_queued_for_a_replica_and_cancelled_costs_nothing(server: SimServer) -> None:
    spec = server.spec(max_concurrency=1)  # the second call waits for the replica's slot
    ledger = CallLedger(budget=Budget(max_calls=2))
    token = use_ledger(ledger)
    try:
        first = asyncio.ensure_future(Agent("a", spec).run("What is 1 + 1?"))
        queued = asyncio.ensure_future(Agent("b", spec).run("What is 2 + 2?"))
        for _ in range(3):  # let both tasks reach their first wait
            await asyncio.sleep(0)
        assert ledger.meter.reserved_calls == 2
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        assert ledger.meter.reserved_calls == 1 and ledger.meter.used_calls == 0
        await first
        await Agent("c", spec).run("What is 3 + 3?")  # the freed call is usable again
    finally:
        reset_ledger(token)
    assert (ledger.meter.used_calls, (await server.stats())["requests"]) == (2, 2)


async def test_an_unsent_hold_costs_nothing_and_a_settled_one_its_real_usage() -> None:
    from concilium.agents._budget import BudgetMeter

    meter = BudgetMeter(Budget(max_calls=2, max_tokens=200))
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 20}
    worst = prompt_bound(body) + 20
    first, second = await meter.reserve(dict(body), "m"), await meter.reserve(dict(body), "m")
    assert (meter.reserved_calls, meter.reserved_tokens) == (2, 2 * worst)
    meter.fail(first, answered=False)  # never sent
    assert (meter.used_calls, meter.used_tokens, meter.reserved_calls) == (0, 0, 1)
    meter.settle(second, Usage(6, 4))
    assert (meter.used_calls, meter.used_tokens, meter.reserved_tokens) == (1, 10, 0)


async def test_a_server_counting_past_the_bound_scales_the_next_reservations() -> None:
    from concilium.agents._budget import BudgetMeter

    meter = BudgetMeter(Budget(max_tokens=10_000))
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 20}
    bound = prompt_bound(body)
    meter.settle(await meter.reserve(dict(body), "m"), Usage(2 * bound, 4))  # twice the bound
    assert (await meter.reserve(dict(body), "m")).tokens == 2 * bound + 20


async def test_replayed_calls_cost_nothing(server: SimServer) -> None:
    record = CallRecord()
    solver = Agent("solver", server.spec(capabilities=ONE_BY_ONE), max_tokens=30)
    first = await run(self_consistency(solver, samples=4), "What is 2 + 2?", record=record)
    again = await run(self_consistency(solver, samples=4), "What is 2 + 2?", record=record,
                      budget=Budget(max_calls=1, max_tokens=1))  # fmt: skip
    assert again.answer == first.answer and (again.calls, again.replayed) == (0, 4)
