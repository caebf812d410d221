"""``concilium serve api`` as a user runs it (a subprocess), called with the official
``openai`` client: answers, streamed rounds, API keys, concurrency, errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
import pytest_asyncio

from concilium.serving import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is 12 * 7?"}]


async def start(*args: str) -> ManagedProcess:
    argv = [
        sys.executable,
        "-P",
        "-m",
        "concilium",
        "serve",
        "api",
        *args,
        "--backend",
        "sim",
        "--port",
        "0",
    ]
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=60)  # fmt: skip
    return await proc.start()


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ManagedProcess]:
    proc = await start("examples/debate.yaml", "examples/self_consistency.yaml")
    yield proc
    await proc.stop()


async def test_the_openai_client_gets_a_debates_answer_and_its_votes(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=api.url, api_key="unused")
    assert sorted(m.id for m in (await client.models.list()).data) == ["debate", "self_consistency"]
    reply = await client.chat.completions.create(model="debate", messages=QUESTION)
    extension = reply.model_extra["concilium"]
    assert reply.choices[0].message.content == extension["answer"] == extension["votes"]["winner"]
    assert extension["calls"] == 6 and len(extension["transcript"]) == 6
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


async def test_streaming_sends_each_rounds_turns_then_the_answer(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=api.url, api_key="unused")
    reasoning, content, finish = [], [], None
    async for chunk in await client.chat.completions.create(
        model="debate", messages=QUESTION, stream=True
    ):
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            assert not content, "reasoning after the answer"
            reasoning.append(delta.reasoning_content)
        if delta.content:
            content.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    assert [r.split("]")[0] for r in reasoning] == [
        f"[round {r} {a}" for r in (1, 2) for a in ("alice", "bob", "carol")
    ]
    assert len(content) == 1 and finish == "stop"


async def test_32_concurrent_requests_all_succeed(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=api.url, api_key="unused", max_retries=0)
    replies = await asyncio.gather(*(client.chat.completions.create(model="self_consistency", messages=QUESTION)
                                     for _ in range(32)))  # fmt: skip
    assert len(replies) == 32 and all(r.model_extra["concilium"]["calls"] == 1 for r in replies)
    assert len({r.id for r in replies}) == 32


async def test_unknown_model_and_bad_requests_get_openai_style_errors(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=api.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no model 'debait'"):
        await client.chat.completions.create(model="debait", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="at least one user message"):
        await client.chat.completions.create(
            model="debate", messages=[{"role": "system", "content": "hi"}]
        )


async def test_with_an_api_key_a_request_without_it_gets_401() -> None:
    proc = await start("examples/debate.yaml", "--api-key", "s3cret")
    try:
        with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
            await openai.AsyncOpenAI(
                base_url=proc.url, api_key="wrong", max_retries=0
            ).models.list()
        models = await openai.AsyncOpenAI(base_url=proc.url, api_key="s3cret").models.list()
        assert [m.id for m in models.data] == ["debate"]
    finally:
        await proc.stop()


def test_binding_beyond_loopback_without_a_key_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml", "--host", "0.0.0.0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in out.stderr
