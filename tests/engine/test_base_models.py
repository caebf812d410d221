"""Base-model agents on the real engine (Gemma 3 270M base): few-shot completion
prompts over /v1/completions give one-line, on-topic answers, never an echo."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from concilium.agents import Agent, Capabilities
from concilium.graphs.kit import majority_vote
from concilium.prompts import PromptLibrary

pytestmark = pytest.mark.asyncio(loop_scope="session")

CAPITALS = {"France": "Paris", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo"}


def extract_text(text: str) -> str | None:
    """The whole reply, whitespace folded (the ``answer: text`` format)."""
    return " ".join(text.split()) or None


def base_agent(engine: Any, name: str, **options: Any) -> Agent:
    lib = PromptLibrary()
    spec = replace(engine.spec(), capabilities=Capabilities(mode="completion"))

    def prompt(messages: Any) -> str:
        return lib.render("completion/capitals", question=messages[-1]["content"])

    return Agent(name, spec, prompt=prompt, max_tokens=12, **options)


async def test_greedy_single_sample_answers_capitals(engine: Any) -> None:
    agent = base_agent(engine, "greedy", temperature=0.0)
    right = 0
    for country, capital in CAPITALS.items():
        reply = await agent.run(f"What is the capital of {country}?")
        answer = extract_text(reply.text)
        assert (
            answer is not None
            and "\n" not in reply.text
            and answer.lower() not in {"answer", "<answer>"}
        )
        right += answer == capital
    assert right >= 3  # measured 0.95 on 20 items
    france = await agent.run("What is the capital of France?")
    assert extract_text(france.text) == "Paris"


async def test_nine_samples_vote_on_topic(engine: Any) -> None:
    agent = base_agent(engine, "sampler", temperature=0.8)
    reply = await agent.run("What is the capital of France?", n=9)
    assert len(reply.texts) == 9
    tally = majority_vote([extract_text(t) for t in reply.texts])
    assert tally.winner == "Paris", tally.as_dict()
