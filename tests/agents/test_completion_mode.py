"""Base models as agents: completion mode sends a few-shot prompt to /v1/completions
with a newline stop, and n>1, logprobs and streaming still work (real loopback HTTP)."""

from __future__ import annotations

import pytest

from concilium.agents import Agent, Capabilities

BASE = Capabilities(n=True, logprobs=True, mode="completion")
FRAME = "Q: What is 2 + 2?\nA: 4\n\nQ: {q}\nA:"


def few_shot(messages):
    return FRAME.format(q=messages[-1]["content"])


@pytest.mark.parametrize("transport", ["direct", "litellm"])
async def test_completion_mode_posts_a_prompt_with_a_newline_stop(sim, transport: str) -> None:
    spec = sim.spec(capabilities=BASE, transport=transport)
    agent = Agent("base", spec, prompt=few_shot, temperature=0.8, logprobs=True, top_logprobs=2)
    reply = await agent.run("What is 12 * 7?", n=3)
    log = await sim.requests()
    assert log[0]["endpoint"] == "completions"
    body = log[0]["body"]
    assert body["prompt"] == FRAME.format(q="What is 12 * 7?") and "messages" not in body
    assert body["stop"] == ["\n"] and body["n"] == 3
    assert len(reply.texts) == 3 and all("\n" not in t for t in reply.texts)
    assert " 84" in reply.texts  # the simulated model answers the last Q: line
    assert reply.logprobs is not None and len(reply.logprobs[0].top) == 2


async def test_default_frame_system_preamble_and_own_stop(sim) -> None:
    agent = Agent("base", sim.spec(capabilities=BASE), system="Sums.", stop=("\n\n",))
    await agent.run("What is 1 + 2?")
    body = (await sim.requests())[0]["body"]
    assert body["prompt"] == "Sums.\n\nQ: What is 1 + 2?\nA:"
    assert body["stop"] == ["\n\n"]


async def test_completion_mode_streams(sim) -> None:
    agent = Agent("base", sim.spec(capabilities=BASE), prompt=few_shot)
    pieces: list[str] = []
    reply = await agent.run("What is 3 + 4?", on_text=pieces.append)
    log = await sim.requests()
    assert log[0]["endpoint"] == "completions" and log[0]["body"].get("stream")
    assert "".join(pieces) == reply.text and reply.text.strip() == "7"


async def test_chat_mode_is_unchanged(sim) -> None:
    await Agent("chat", sim.spec()).run("hi")
    log = await sim.requests()
    assert log[0]["endpoint"] == "chat" and "messages" in log[0]["body"]
