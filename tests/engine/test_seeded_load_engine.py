"""The embedded engine stays up under many seeded requests with long prompts at once.

With vLLM's chunked prefill, a prompt cut over two steps has its first step's sampled
token discarded; for a seeded request vLLM's CPU build then rewinds the request's
generator, which a CPU generator cannot do ("CPU Generator does not use offset"), and
the whole engine dies: every request after it gets 500, then connection refused. The
engine is started with chunked prefill off and a step budget as large as the longest
prompt, so no prompt is cut. On the command before that, the first round below crashed
the engine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.engine

ROUNDS, AT_ONCE = 20, 16


async def _complete(session: aiohttp.ClientSession, url: str, i: int, r: int) -> int:
    # 400 to 955 words: sixteen of them overflow a 2048-token step, which cut prompts
    prompt = " ".join(f"word{j}" for j in range(400 + 37 * i)) + "\nQ: What is 2 + 2?\nA:"
    body = {"model": "gemma-3-270m", "prompt": prompt, "max_tokens": 4, "temperature": 0.8,
            "seed": 1000 * r + i}  # fmt: skip
    async with session.post(url + "/completions", json=body) as resp:
        return resp.status


async def test_seeded_requests_with_long_prompts_at_once_never_crash_the_engine(
    engine: Any,
) -> None:
    url = engine.urls[0]
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for r in range(ROUNDS):
            statuses = await asyncio.gather(
                *(_complete(session, url, i, r) for i in range(AT_ONCE))
            )
            assert statuses == [200] * AT_ONCE, f"round {r}: {statuses}"
        async with session.get(url.removesuffix("/v1") + "/health") as resp:
            assert resp.status == 200
