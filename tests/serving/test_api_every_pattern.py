"""Every served pattern shows its work in the standard streaming field.

All example workflows are served by one ``concilium serve api`` (a subprocess) on
their simulated servers (test doubles); each is asked once over the Responses API,
streamed, as the ``openai`` client reads it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest_asyncio

from concilium.serving import ManagedProcess

EXAMPLES = sorted(str(p) for p in Path("examples").glob("*.yaml"))


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ManagedProcess]:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", *EXAMPLES,
            "--backend", "sim", "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=180)  # fmt: skip
    yield await proc.start()
    await proc.stop()


async def streamed(client: openai.AsyncOpenAI, model: str) -> tuple[str, Any]:
    """The reasoning summary as streamed, and the completed response."""
    trace, final = "", None
    async with await client.responses.create(
        model=model, input="What is 12 * 7?", stream=True
    ) as events:
        async for event in events:
            if event.type == "response.reasoning_summary_text.delta":
                trace += event.delta
            elif event.type == "response.completed":
                final = event.response
    return trace, final


async def test_every_pattern_streams_its_turns_and_vote_as_reasoning(
    api: ManagedProcess,
) -> None:
    client = openai.AsyncOpenAI(base_url=api.url, api_key="unused", max_retries=0, timeout=300)
    models = [m.id for m in (await client.models.list()).data]
    assert len(models) == len(EXAMPLES) >= 30
    replies = await asyncio.gather(*(streamed(client, m) for m in models))
    for model, (trace, final) in zip(models, replies, strict=True):
        concilium = (final.model_extra or {})["concilium"]
        assert concilium["transcript"], model
        for turn in concilium["transcript"]:  # each turn, tagged with its agent
            assert f"{turn['agent']}] {turn['text']}\n" in trace, (model, turn)
        votes = concilium["votes"]
        last = trace.splitlines()[-1]
        if votes is None:
            assert "[votes] " not in last, f"{model}: a [votes] line without a vote"
        else:
            assert last.startswith("[votes] ") and last.endswith(f"-> {votes['winner']}"), model
        assert final.output_text == str(concilium["answer"]), model
