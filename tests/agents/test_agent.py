"""Agents over the fake model (in process) and the simulated server (real HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from concilium import BudgetExceeded, ModelCallError, OutputParseError
from concilium.agents import Agent, AnswerConfidence, Budget, Capabilities, FakeModel, ModelSpec
from concilium.agents.ledger import CallLedger, CallRecord, reset_ledger, use_ledger
from concilium.agents.sim import Faults, Latency, Rule, SimConfig
from concilium.serving import SimServer


async def test_run_returns_text_usage_and_system_prompt() -> None:
    fake = FakeModel({"a": "hello there"})
    reply = await Agent("a", fake.spec(), system="Be brief.", temperature=0.3).run("hi")
    assert reply.text == "hello there"
    assert reply.usage.completion_tokens == 2
    body = fake.requests[0].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["temperature"] == 0.3


async def test_output_schema_parses_and_repairs_once() -> None:
    fake = FakeModel({"a": ["not json at all", '{"answer": "84", "confidence": 0.9}']})
    reply = await Agent("a", fake.spec(), output=AnswerConfidence).run("12*7?")
    assert reply.parsed == AnswerConfidence(answer="84", confidence=0.9)
    assert len(fake.requests) == 2
    repair = fake.requests[1].messages
    assert repair[-2] == {"role": "assistant", "content": "not json at all"}
    assert "could not be used" in repair[-1]["content"]


async def test_output_schema_fails_with_typed_error_after_one_repair() -> None:
    fake = FakeModel({"a": ['{"answer": 1, "confidence": 7}']})
    with pytest.raises(OutputParseError, match="after one repair turn") as info:
        await Agent("a", fake.spec(), output=AnswerConfidence).run("?")
    assert info.value.agent == "a"
    assert len(fake.requests) == 2


async def test_n_samples_without_server_support_become_concurrent_seeded_requests() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: f"sample {i}", capabilities=Capabilities(n=False))
    reply = await Agent("a", fake.spec(), seed=10).run("?", n=3)
    assert sorted(reply.texts) == ["sample 0", "sample 1", "sample 2"]
    assert sorted(r.body["seed"] for r in fake.requests) == [10, 11, 12]
    assert all("n" not in r.body for r in fake.requests)


async def test_a_failed_sample_request_cancels_its_siblings_and_is_raised_as_itself() -> None:
    # n=3 without server support is three requests; the one with seed 1 fails fast,
    # the other two would wait forever: they must be cancelled before run() raises
    cancelled: list[int] = []

    class OneFails:
        async def chat(self, spec, api_base, body, headers):  # the Transport chat signature
            if body["seed"] == 1:
                raise ModelCallError("bad request", model=spec.model, status=400)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(body["seed"])
                raise

    spec = ModelSpec("fake/m", transport=OneFails(), capabilities=Capabilities(n=False))
    ledger = CallLedger(budget=Budget(max_calls=10))
    token = use_ledger(ledger)
    try:
        with pytest.raises(ModelCallError, match="bad request"):
            await Agent("a", spec, seed=0).run("?", n=3)
    finally:
        reset_ledger(token)
    assert sorted(cancelled) == [0, 2]
    # the cancelled requests were sent: they count, and nothing is left reserved
    assert ledger.meter.reserved_calls == 0 and ledger.meter.used_calls == 3


async def test_n_samples_with_server_support_are_one_request() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: f"sample {i}")
    reply = await Agent("a", fake.spec()).run("?", n=4)
    assert len(reply.texts) == 4 and len(fake.requests) == 1
    assert fake.requests[0].body["n"] == 4


async def test_budget_on_calls_stops_the_next_call() -> None:
    fake = FakeModel()
    token = use_ledger(CallLedger(budget=Budget(max_calls=2)))
    try:
        agent = Agent("a", fake.spec())
        await agent.run("1")
        await agent.run("2")
        with pytest.raises(BudgetExceeded, match="2 calls used, the limit is 2"):
            await agent.run("3")
    finally:
        reset_ledger(token)
    assert len(fake.requests) == 2


async def test_budget_on_tokens() -> None:
    fake = FakeModel({"a": "one two three four five"})
    # the first prompt's bound is 43 (3 bytes and a chat template's 40): it fits in 50;
    # 2 in + 5 out = 7 tokens are spent, and the second's bound (45) does not fit in 43
    token = use_ledger(CallLedger(budget=Budget(max_tokens=50)))
    try:
        await Agent("a", fake.spec()).run("x y")  # 2 in + 5 out = 7 tokens
        with pytest.raises(BudgetExceeded, match="tokens"):
            await Agent("a", fake.spec()).run("again")
    finally:
        reset_ledger(token)


async def test_record_replays_completed_calls_without_sending_them() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: f"reply {i}")
    record = CallRecord()
    agent = Agent("a", fake.spec())
    token = use_ledger(CallLedger(record=record))
    first = await agent.run("q", key="k1")
    reset_ledger(token)
    ledger = CallLedger(record=record)
    token = use_ledger(ledger)
    again = await agent.run("q", key="k1")
    other = await agent.run("q", key="k2")
    reset_ledger(token)
    assert again.text == first.text == "reply 0" and again.replayed
    assert other.text == "reply 1" and not other.replayed
    assert ledger.replayed == 1 and ledger.calls == 1
    assert len(fake.requests) == 2


async def test_retryable_status_is_retried_then_succeeds() -> None:
    config = SimConfig(latency=Latency(fixed=0), faults=Faults(first_errors=2, error_status=503))
    async with SimServer(config) as sim:
        ledger = CallLedger()
        token = use_ledger(ledger)
        try:
            reply = await Agent("a", sim.spec()).run("What is 2 + 2?")
        finally:
            reset_ledger(token)
        stats = await sim.stats()
    assert "[simulated reply]" in reply.text
    assert stats["requests"] == 3 and stats["errors"] == 2
    assert ledger.attempts == 3 and ledger.calls == 1


async def test_non_retryable_status_fails_fast_with_model_status_and_fix() -> None:
    config = SimConfig(latency=Latency(fixed=0), faults=Faults(first_errors=5, error_status=401))
    async with SimServer(config) as sim:
        with pytest.raises(ModelCallError) as info:
            await Agent("a", sim.spec()).run("hi")
        stats = await sim.stats()
    err = info.value
    assert err.status == 401 and not err.retryable
    assert "concilium-sim" in str(err) and "api_key" in str(err)
    assert stats["requests"] == 1


async def test_connection_refused_is_retryable_and_names_the_server() -> None:
    spec = ModelSpec("hosted_vllm/m", api_base="http://127.0.0.1:9/v1", timeout=2)
    from concilium.agents._ledger import RetryPolicy

    token = use_ledger(CallLedger(retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02)))
    try:
        with pytest.raises(ModelCallError, match="is the server running") as info:
            await Agent("a", spec).run("hi")
    finally:
        reset_ledger(token)
    assert info.value.retryable and info.value.api_base == "http://127.0.0.1:9/v1"


async def test_direct_and_litellm_transports_give_identical_completions() -> None:
    config = SimConfig(
        seed=5,
        latency=Latency(fixed=0),
        rules=[Rule(agent="a", replies=["The answer is \\boxed{84}."])],
    )
    async with SimServer(config) as sim:
        direct = sim.spec(transport="direct")
        via_litellm = sim.spec(transport="litellm")
        one = await Agent("a", direct, logprobs=True, top_logprobs=2).run("12*7?", key="x")
        await sim.reset()
        two = await Agent("a", via_litellm, logprobs=True, top_logprobs=2).run("12*7?", key="x")
        received = await sim.requests()
    assert one.texts == two.texts
    assert one.usage == two.usage
    assert (
        one.logprobs == two.logprobs and one.logprobs is not None and len(one.logprobs[0].top) == 2
    )
    assert received[0]["body"]["model"] == "concilium-sim"


async def test_spans_follow_genai_conventions(spans) -> None:
    spans.clear()
    fake = FakeModel({"solver": "ok"})
    await Agent("solver", fake.spec("m"), temperature=0.5).run("hi", n=2)
    finished = {s.name: s for s in spans.get_finished_spans()}
    chat = finished["chat fake/m"]
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "fake/m"
    assert chat.attributes["gen_ai.request.temperature"] == 0.5
    assert chat.attributes["gen_ai.request.choice.count"] == 2
    assert chat.attributes["gen_ai.usage.output_tokens"] == 2
    agent_span = finished["invoke_agent solver"]
    assert chat.parent.span_id == agent_span.context.span_id
