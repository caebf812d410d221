"""Every chat-completions field ``serve api`` gets is honoured or refused with a 400.

``concilium serve api`` runs as a user runs it (a subprocess) against the simulated
server (a test double) in this process, which records every request it receives;
the requests come from the official ``openai`` client or raw HTTP.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from concilium.serving import ManagedProcess, SimServer

QUESTION: Any = [{"role": "user", "content": "What is 12 * 7?"}]


def url(proc: ManagedProcess) -> str:
    assert proc.url is not None
    return proc.url


async def start(*args: str, backend: str) -> ManagedProcess:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", *args,
            "--backend", backend, "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=60)  # fmt: skip
    return await proc.start()


@pytest_asyncio.fixture
async def api(sim: SimServer) -> AsyncIterator[ManagedProcess]:
    proc = await start("examples/debate.yaml", backend=sim.url)
    yield proc
    await proc.stop()


def client(api: ManagedProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url(api), api_key="unused", max_retries=0)


async def bodies(sim: SimServer) -> list[dict[str, Any]]:
    return [r["body"] for r in await sim.requests()]


async def test_seed_temperature_and_max_tokens_reach_every_call(
    api: ManagedProcess, sim: SimServer
) -> None:
    ask = {"model": "debate", "messages": QUESTION, "seed": 11, "temperature": 0.3}
    first = await client(api).chat.completions.create(**ask, max_tokens=40)
    sent = await bodies(sim)
    assert len(sent) == 6  # debate: 3 debaters x 2 rounds
    assert {b["temperature"] for b in sent} == {0.3}
    assert all(b["max_tokens"] <= 40 for b in sent)
    seeds = [b["seed"] for b in sent]
    assert len(set(seeds)) == 6  # each call its own seed: the debaters still differ

    await sim.reset()
    again = await client(api).chat.completions.create(**ask, max_tokens=40)
    assert sorted(b["seed"] for b in await bodies(sim)) == sorted(seeds)
    assert again.choices[0].message.content == first.choices[0].message.content
    transcript = [t["text"] for t in (again.model_extra or {})["concilium"]["transcript"]]
    assert transcript == [t["text"] for t in (first.model_extra or {})["concilium"]["transcript"]]

    await sim.reset()
    await client(api).chat.completions.create(**{**ask, "seed": 12}, max_tokens=40)
    assert sorted(b["seed"] for b in await bodies(sim)) != sorted(seeds)


async def test_max_completion_tokens_caps_calls_like_max_tokens(
    api: ManagedProcess, sim: SimServer
) -> None:
    await client(api).chat.completions.create(
        model="debate", messages=QUESTION, max_completion_tokens=5
    )
    assert {b["max_tokens"] for b in await bodies(sim)} == {5}


async def test_n_runs_the_workflow_n_times_and_sums_their_usage(
    api: ManagedProcess, sim: SimServer
) -> None:
    reply = await client(api).chat.completions.create(
        model="debate", messages=QUESTION, n=3, seed=5
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    runs = (reply.model_extra or {})["concilium"]["choices"]
    assert [c.message.content for c in reply.choices] == [r["answer"] for r in runs]
    sent = await sim.requests()
    assert len(sent) == 18  # 3 runs of 6 calls
    assert len({r["body"]["seed"] for r in sent}) == 18
    one = await client(api).chat.completions.create(model="debate", messages=QUESTION, seed=5)
    # run 0 of the n=3 request has the seed of the single request: the same run
    texts = [t["text"] for t in (one.model_extra or {})["concilium"]["transcript"]]
    assert [t["text"] for t in runs[0]["transcript"]] == texts


async def test_usage_of_n_runs_is_the_sum_the_simulated_server_billed(
    api: ManagedProcess, sim: SimServer
) -> None:
    reply = await client(api).chat.completions.create(
        model="debate", messages=QUESTION, n=2, seed=3
    )
    stats = await sim.stats()
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == stats["prompt_tokens"]
    assert reply.usage.completion_tokens == stats["completion_tokens"]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tools"),
        ("tool_choice", "required", "tool_choice"),
        ("logprobs", True, "logprobs"),
        ("top_logprobs", 3, "top_logprobs"),
        ("top_p", 0.5, "top_p"),
        ("presence_penalty", 0.5, "presence_penalty"),
        ("logit_bias", {"42": 5}, "logit_bias"),
        ("store", True, "store"),
        ("reasoning_effort", "high", "reasoning_effort"),
        ("not_an_openai_field", 1, "not_an_openai_field"),
        ("n", 17, "n"),
        ("temperature", 3, "temperature"),
        ("stop", ["a", "b", "c", "d", "e"], "stop"),
    ],
)
async def test_a_field_a_workflow_cannot_honour_gets_a_400_naming_it(
    api: ManagedProcess, sim: SimServer, field: str, value: Any, named: str
) -> None:
    async with httpx.AsyncClient(base_url=url(api)) as http:
        body = {"model": "debate", "messages": QUESTION, field: value}
        reply = await http.post("/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    err = reply.json()["error"]
    assert err["type"] == "invalid_request_error" and named in err["message"]
    assert await sim.requests() == []  # refused before any model call


@pytest.mark.parametrize(
    ("field", "value"),
    [("tools", []), ("tool_choice", "none"), ("logprobs", False), ("top_p", 1),
     ("store", False), ("user", "u-1"), ("stream_options", None)],
)  # fmt: skip
async def test_a_field_at_its_off_value_is_accepted(
    api: ManagedProcess, field: str, value: Any
) -> None:
    async with httpx.AsyncClient(base_url=url(api), timeout=60) as http:
        body = {"model": "debate", "messages": QUESTION, field: value}
        reply = await http.post("/chat/completions", json=body)
    assert reply.status_code == 200, reply.text


async def test_n_with_stream_is_refused(api: ManagedProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="n > 1 with stream"):
        await client(api).chat.completions.create(
            model="debate", messages=QUESTION, n=2, stream=True
        )


async def test_stop_cuts_the_answer_at_its_first_stop_sequence(api: ManagedProcess) -> None:
    whole = await client(api).chat.completions.create(model="debate", messages=QUESTION, seed=1)
    answer = whole.choices[0].message.content or ""
    assert len(answer) >= 2
    cut = await client(api).chat.completions.create(
        model="debate", messages=QUESTION, seed=1, stop=[answer[1:]]
    )
    assert cut.choices[0].message.content == answer[:1]


async def test_response_format_json_schema_is_asked_for_and_checked(
    api: ManagedProcess, sim: SimServer
) -> None:
    number: Any = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "number"}},
    }
    reply = await client(api).chat.completions.create(
        model="debate", messages=QUESTION, response_format=number
    )
    assert json.loads(reply.choices[0].message.content or "") == 84
    prompts = json.dumps([r["body"]["messages"] for r in await sim.requests()])
    assert "JSON matching this schema" in prompts  # the instruction reached the agents

    obj: Any = {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}}
    with pytest.raises(openai.APIStatusError) as caught:
        await client(api).chat.completions.create(
            model="debate", messages=QUESTION, response_format=obj
        )
    assert caught.value.status_code == 502
    assert "outside the response_format" in str(caught.value)


async def test_an_invalid_json_schema_is_a_400(api: ManagedProcess, sim: SimServer) -> None:
    bad: Any = {"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": 5}}}
    with pytest.raises(openai.BadRequestError, match="not a valid JSON Schema"):
        await client(api).chat.completions.create(
            model="debate", messages=QUESTION, response_format=bad
        )
    assert await sim.requests() == []
