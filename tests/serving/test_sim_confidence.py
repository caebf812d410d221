"""The simulated server's per-token confidence model (a test double for DeepConf):
wrong replies are less confident on average, by the configured separation."""

from __future__ import annotations

import statistics

import pytest

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, SimConfig, Statistical, TokenConfidence
from concilium.graphs.kit import trace_confidences
from concilium.serving import SimServer

TEMPLATE = "[simulated reply] " + "step " * 60 + "so the answer is \\boxed{{{answer}}}."


async def scores(
    confidence: TokenConfidence | None, n: int = 300
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """DeepConf scores of n replies (one request), split into right (84) and wrong ones."""
    stat = Statistical(accuracy=0.5, template=TEMPLATE, confidence=confidence)
    async with SimServer(SimConfig(statistical=stat, latency=Latency(fixed=0))) as sim:
        agent = Agent("s", sim.spec(capabilities=Capabilities(n=True, logprobs=True)))
        reply = await agent.with_options(logprobs=True, top_logprobs=5).run("What is 12 * 7?", n=n)
    right: list[dict[str, float]] = []
    wrong: list[dict[str, float]] = []
    for text, logprobs in zip(reply.texts, reply.logprobs_all, strict=True):
        assert logprobs is not None and all(len(t.top) == 5 for t in logprobs)
        (right if "\\boxed{84}" in text else wrong).append(trace_confidences(logprobs, window=8))
    return right, wrong


def mean(traces: list[dict[str, float]], score: str) -> float:
    return statistics.mean(t[score] for t in traces)


@pytest.mark.parametrize("separation", [0.5, 1.0, 2.0])
async def test_wrong_replies_are_less_confident_by_the_separation(separation: float) -> None:
    right, wrong = await scores(TokenConfidence(separation=separation))
    assert len(right) > 100 and len(wrong) > 100
    assert mean(right, "mean") - mean(wrong, "mean") == pytest.approx(separation, abs=0.15)
    assert mean(right, "lowest_group") > mean(wrong, "lowest_group")


async def test_at_separation_zero_confidence_says_nothing() -> None:
    right, wrong = await scores(TokenConfidence(separation=0.0))
    assert abs(mean(right, "mean") - mean(wrong, "mean")) < 0.15


async def test_the_top_k_average_exactly_the_drawn_token_confidence() -> None:
    exact = TokenConfidence(separation=1.0, token_spread=0.0, trace_spread=0.0)
    right, wrong = await scores(exact, n=20)
    assert {round(t["lowest_group"], 9) for t in right} == {3.0}
    assert {round(t["lowest_group"], 9) for t in wrong} == {2.0}


async def test_without_the_model_logprobs_are_drawn_as_before() -> None:
    right, wrong = await scores(None, n=40)
    # the old draw: a chosen token near 0, alternatives a point or more below it
    assert abs(mean(right, "mean") - mean(wrong, "mean")) < 0.5
