"""The simulated server, driven by the official openai client over real HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from concilium.agents.sim import Faults, Latency, Rule, SimConfig
from concilium.serving import SimServer


@pytest.fixture
async def client(sim):
    async with openai.AsyncOpenAI(base_url=sim.url, api_key="unused", max_retries=0) as c:
        yield c


async def test_models_say_they_are_simulated(client) -> None:
    models = await client.models.list()
    assert [(m.id, m.owned_by) for m in models.data] == [
        ("concilium-sim", "concilium-simulated-server")
    ]


async def test_chat_with_n_and_logprobs(client) -> None:
    resp = await client.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "What is 12 * 7?"}],
        n=4,
        logprobs=True,
        top_logprobs=3,
    )
    assert len(resp.choices) == 4 and resp.system_fingerprint == "concilium-simulated"
    assert all("[simulated reply]" in c.message.content for c in resp.choices)
    first = resp.choices[0].logprobs.content[0]
    assert len(first.top_logprobs) == 3 and first.logprob <= 0
    assert resp.usage.prompt_tokens == 5  # words stand in for tokens


async def test_streaming_yields_the_same_text(client, sim) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        stream=True,
        stream_options={"include_usage": True},
        seed=9,
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    whole = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "What is 2 + 2?"}], seed=9
    )
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


async def test_completions_endpoint(client) -> None:
    resp = await client.completions.create(model="m", prompt="What is 3 + 3?", max_tokens=5)
    assert resp.choices[0].finish_reason == "length" and len(resp.choices[0].text.split()) == 5


async def test_statistical_answers_are_seeded_and_roughly_accurate() -> None:
    config = SimConfig(seed=3, latency=Latency(fixed=0))
    async with SimServer(config) as sim, openai.AsyncOpenAI(base_url=sim.url, api_key="x") as c:
        resp = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "What is 12 * 7?"}], n=200
        )
        again = await SimServer(config).__aenter__()
        try:
            async with openai.AsyncOpenAI(base_url=again.url, api_key="x") as c2:
                resp2 = await c2.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "What is 12 * 7?"}], n=200
                )
        finally:
            await again.__aexit__()
    texts = [ch.message.content for ch in resp.choices]
    assert texts == [ch.message.content for ch in resp2.choices]
    right = sum("\\boxed{84}" in t for t in texts) / len(texts)
    assert 0.6 < right < 0.8  # accuracy 0.7


async def test_scripted_rules_by_agent_then_regex() -> None:
    rules = [Rule(agent="a", replies=["first", "second"]), Rule(match="weather", replies=["sunny"])]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        async with openai.AsyncOpenAI(
            base_url=sim.url, api_key="x", default_headers={"X-Concilium-Agent": "a"}
        ) as c:
            got = [
                (
                    await c.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "q"}]
                    )
                )
                .choices[0]
                .message.content
                for _ in range(3)
            ]
        async with openai.AsyncOpenAI(base_url=sim.url, api_key="x") as c:
            weather = await c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "the weather?"}]
            )
    assert got == ["first", "second", "second"]
    assert weather.choices[0].message.content == "sunny"


async def test_metrics_use_vllm_names_and_count_prefix_hits(sim, client) -> None:
    long_prompt = " ".join(f"w{i}" for i in range(64))
    for _ in range(2):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": long_prompt}]
        )
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.base + "/metrics") as resp:
            text = await resp.text()
    assert 'vllm:num_requests_running{model_name="concilium-sim"} 0' in text
    stats = await sim.stats()
    assert stats["prefix_cache_queries"] == 128 and stats["prefix_cache_hits"] == 64
    assert 'vllm:prefix_cache_hits_total{model_name="concilium-sim"} 64' in text


async def test_fault_injection_status_and_dropped_connection() -> None:
    async with SimServer(SimConfig(faults=Faults(error_rate=1.0, error_status=429))) as sim:
        async with openai.AsyncOpenAI(base_url=sim.url, api_key="x", max_retries=0) as c:
            with pytest.raises(openai.RateLimitError):
                await c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "q"}]
                )
    async with SimServer(SimConfig(faults=Faults(drop_rate=1.0))) as sim:
        async with openai.AsyncOpenAI(base_url=sim.url, api_key="x", max_retries=0) as c:
            with pytest.raises(openai.APIConnectionError):
                await c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "q"}]
                )


async def test_a_hung_request_is_cancelled_when_the_client_gives_up() -> None:
    async with SimServer(SimConfig(faults=Faults(hang_rate=1.0))) as sim:
        async with openai.AsyncOpenAI(
            base_url=sim.url, api_key="x", max_retries=0, timeout=0.3
        ) as c:
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "q"}]
                )
        deadline = asyncio.get_running_loop().time() + 10  # poll: the server sees the hang-up
        while not (stats := await sim.stats())["cancelled"]:
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.02)
    assert stats["cancelled"] == 1 and stats["in_flight"] == 0


async def test_own_process_mode_and_refusing_non_loopback() -> None:
    async with SimServer(process=True) as sim:
        assert (await sim.stats())["requests"] == 0
    from concilium import UserError

    with pytest.raises(UserError, match="loopback"):
        SimServer(host="0.0.0.0")


async def test_streamed_text_completions_join_to_the_reply_with_one_logprob_per_piece(
    client,
) -> None:
    whole = await client.completions.create(model="m", prompt="What is 3 + 3?", logprobs=2, seed=4)
    pieces, logprobs, finish = [], [], None
    async for chunk in await client.completions.create(
        model="m", prompt="What is 3 + 3?", logprobs=2, seed=4, stream=True
    ):
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
            if choice.logprobs is not None:
                logprobs.append(choice.logprobs)
    assert "".join(pieces).strip() == whole.choices[0].text and finish == "stop"
    assert whole.choices[0].logprobs is not None and len(logprobs) == len(
        whole.choices[0].logprobs.tokens
    )


async def test_a_scripted_tool_call_comes_back_as_openai_tool_calls() -> None:
    script = 'TOOL_CALLS: [{"name": "search", "arguments": {"query": "lighthouse"}}]'
    async with SimServer(SimConfig(rules=[Rule(replies=[script])])) as sim:
        async with openai.AsyncOpenAI(base_url=sim.url, api_key="unused", max_retries=0) as c:
            resp = await c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "q"}]
            )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(t.function.name, t.function.arguments) for t in choice.message.tool_calls or []] == [
        ("search", '{"query": "lighthouse"}')
    ]


def test_the_answer_logic_runs_without_a_server() -> None:
    from concilium.serving._sim_model import SimulatedModel

    model = SimulatedModel(SimConfig(seed=2, statistical={"accuracy": 1.0, "conformity": 0.0}))
    body = {"messages": [{"role": "user", "content": "What is 6 * 7?"}], "n": 3, "max_tokens": 100}
    answer = model.answer(body, "alice")
    assert [c.text.endswith("\\boxed{42}.") for c in answer.choices] == [True] * 3
    assert answer.prompt_tokens == 5 and answer.completion_tokens == sum(
        len(c.text.split()) for c in answer.choices
    )
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {
        "answer": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}}}}  # fmt: skip
    filled = model.answer({**body, "n": 1, "response_format": schema}, "alice").choices[0].text
    assert '"answer": "42"' in filled and '"confidence": ' in filled
