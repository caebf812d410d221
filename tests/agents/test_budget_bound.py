"""A token budget holds at the server's own count: over real HTTP to a simulated
server (a test double) that counts prompt tokens as one a byte or a character of
each message plus a chat template's markers, not as the words the client could
guess. The prompt is reserved at a bound no such count can exceed, so what the
server bills never passes the budget, however wide the fan-out."""

from __future__ import annotations

from typing import Any

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, Capabilities, aclose
from concilium.agents._budget import prompt_bound
from concilium.agents.sim import Latency, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import debate, self_consistency
from concilium.serving import SimServer

ONE_BY_ONE = Capabilities(n=False)  # n samples are n requests, sent side by side
QUESTION = "Wie viel ist 12 × 7? Antworte kurz, bitte — für Zürich."  # non-ASCII: bytes > chars


def billed(stats: dict[str, Any]) -> int:
    return int(stats["prompt_tokens"]) + int(stats["completion_tokens"])


@pytest.mark.parametrize("counting", ["bytes", "chars"])
@pytest.mark.parametrize("width", [4, 16])
async def test_a_fan_out_is_never_billed_past_its_token_budget(counting: str, width: int) -> None:
    config = SimConfig(seed=3, latency=Latency(fixed=0.02), prompt_tokens=counting)  # type: ignore[arg-type]
    async with SimServer(config) as sim:
        solver = Agent("solver", sim.spec(capabilities=ONE_BY_ONE), max_tokens=8)
        with pytest.raises(BudgetExceeded, match="tokens"):
            await run(self_consistency(solver, samples=width), QUESTION,
                      budget=Budget(max_tokens=500))  # fmt: skip
        stats = await sim.stats()
        await aclose()
    assert stats["requests"] >= 1  # it made progress, then stopped
    # the server's own count: one call is billed ~190 (its prompt, the pattern's
    # instruction and the question, is ~40 words in ~180 bytes); reserving words let
    # every call of the fan-out go at once, billed 724 (4 wide) and 2,300 (16 wide)
    assert billed(stats) <= 500


async def test_a_debate_is_never_billed_past_its_token_budget() -> None:
    # later rounds carry the other agents' answers: long prompts, counted per byte
    config = SimConfig(seed=4, latency=Latency(fixed=0.02), prompt_tokens="bytes")
    async with SimServer(config) as sim:
        team = [Agent(f"a{i}", sim.spec(), max_tokens=24) for i in range(4)]
        with pytest.raises(BudgetExceeded, match="tokens"):
            await run(debate(team, rounds=3), QUESTION, budget=Budget(max_tokens=700))
        stats = await sim.stats()
        await aclose()
    assert stats["requests"] >= 2 and billed(stats) <= 700


def test_the_bound_covers_every_part_of_a_message() -> None:
    text = {"messages": [{"role": "user", "content": "ab"}]}
    named = {"messages": [{"role": "user", "content": "ab", "name": "bob"}]}
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "ab"}]}]}
    calls = {"messages": [{"role": "assistant", "content": None,
                           "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]}  # fmt: skip
    tools = {**text, "tools": [{"type": "function", "function": {"name": "search"}}]}
    base = prompt_bound(text)
    assert prompt_bound(parts) == base and prompt_bound(named) == base + 3
    assert prompt_bound(calls) > base - 2 and prompt_bound(tools) > base + 40
    assert prompt_bound({"prompt": "é" * 10}) > prompt_bound({"prompt": "e" * 10})
