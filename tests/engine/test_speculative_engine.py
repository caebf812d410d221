"""Speculative decoding on the embedded engine (issue 15): vLLM's CPU build runs the
``ngram`` method on Gemma 3 270M. A replica started with ``--speculative-config``
drafts tokens from the prompt, the served model accepts most of them on a copying
prompt (read from vLLM's own /metrics), and its greedy answer (the copied line) is the
one the plain engine writes: speculation changes the speed, not the answer."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from concilium.serving.engine import local_engine

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}  # fmt: skip
COPY = (  # a few-shot copying task: the continuation is in the prompt, so n-grams match
    "Copy the list.\n"
    "List: apple, banana, cherry, date, elder, fig, grape, honeydew, kiwi, lemon\n"
    "Copy: apple, banana, cherry, date, elder, fig, grape, honeydew, kiwi, lemon\n"
    "List: red, orange, yellow, green, blue, indigo, violet, black, white, grey\n"
    "Copy:"
)


async def _complete(session: aiohttp.ClientSession, url: str) -> str:
    # the copied line is the answer; past its newline the next "List:" is a near-tie that
    # bf16 kernels of a different batch shape may break the other way
    body = {"model": "gemma-3-270m", "prompt": COPY, "max_tokens": 32, "temperature": 0,
            "stop": ["\n"]}  # fmt: skip
    async with session.post(f"{url}/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["choices"][0]["text"]


def _counter(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(name + "{"))  # fmt: skip


async def test_ngram_speculation_accepts_drafts_and_keeps_the_greedy_answer(engine: Any) -> None:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        plain = await _complete(session, engine.urls[0])
        spec = ["--speculative-config", json.dumps(NGRAM)]
        async with local_engine(extra_args=spec, kv_cache_gb=1) as speculative:
            url = speculative.urls[0]
            drafted = await _complete(session, url)
            async with session.get(url.removesuffix("/v1") + "/metrics") as resp:
                metrics = await resp.text()
    draft_tokens = _counter(metrics, "vllm:spec_decode_num_draft_tokens_total")
    accepted = _counter(metrics, "vllm:spec_decode_num_accepted_tokens_total")
    assert draft_tokens > 0, "the replica did not speculate"
    assert accepted > 0 and accepted <= draft_tokens
    assert drafted == plain
    assert plain.strip().startswith("red, orange, yellow")  # the copy the drafts came from
