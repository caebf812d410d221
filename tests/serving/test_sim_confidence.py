"""The simulated server's per-token confidence model (a test double for DeepConf):
wrong replies are less confident on average, by the configured separation."""

from __future__ import annotations

import statistics

import pytest

from concilium.agents import _wire
from concilium.agents._sim_config import TokenConfidence
from concilium.agents._types import _logprobs
from concilium.agents.sim import SimConfig, Statistical
from concilium.graphs._confidence import token_confidences, trace_confidences
from concilium.serving._sim_model import SimulatedModel

TEMPLATE = "[simulated reply] " + "step " * 60 + "so the answer is \\boxed{{{answer}}}."
BODY = {
    "messages": [{"role": "user", "content": "What is 12 * 7?"}],
    "logprobs": True,
    "top_logprobs": 5,
    "n": 300,
}


def confidences(separation: float, score: str = "mean") -> tuple[list[float], list[float]]:
    """DeepConf scores of 300 replies, split into right (84) and wrong ones."""
    stat = Statistical(
        accuracy=0.5, template=TEMPLATE, confidence=TokenConfidence(separation=separation)
    )
    answer = SimulatedModel(SimConfig(statistical=stat)).answer(BODY, "s")
    right: list[float] = []
    wrong: list[float] = []
    for choice in answer.choices:
        logprobs = _logprobs(_wire.LogprobsReply.model_validate(choice.logprobs))
        assert logprobs is not None and all(len(t.top) == 5 for t in logprobs)
        score_of = trace_confidences(logprobs, window=8)[score]
        (right if "\\boxed{84}" in choice.text else wrong).append(score_of)
    return right, wrong


@pytest.mark.parametrize("separation", [0.5, 1.0, 2.0])
def test_wrong_replies_are_less_confident_by_the_separation(separation: float) -> None:
    right, wrong = confidences(separation)
    assert len(right) > 100 and len(wrong) > 100
    gap = statistics.mean(right) - statistics.mean(wrong)
    assert gap == pytest.approx(separation, abs=0.15)
    low_right, low_wrong = confidences(separation, "lowest_group")
    assert statistics.mean(low_right) > statistics.mean(low_wrong)


def test_at_separation_zero_confidence_says_nothing_and_without_the_model_nothing_changes() -> None:
    right, wrong = confidences(0.0)
    assert abs(statistics.mean(right) - statistics.mean(wrong)) < 0.15
    plain = SimulatedModel(SimConfig(statistical=Statistical(template=TEMPLATE)))
    again = SimulatedModel(SimConfig(statistical=Statistical(template=TEMPLATE)))
    body = {**BODY, "n": 2}
    assert plain.answer(body, "s") == again.answer(body, "s")  # seeded as before


def test_the_top_k_average_the_drawn_token_confidence_and_are_in_order() -> None:
    stat = Statistical(
        template=TEMPLATE, confidence=TokenConfidence(token_spread=0.0, trace_spread=0.0)
    )
    answer = SimulatedModel(SimConfig(statistical=stat)).answer({**BODY, "n": 1}, "s")
    logprobs = _logprobs(_wire.LogprobsReply.model_validate(answer.choices[0].logprobs)) or ()
    expected = 3.0 if "\\boxed{84}" in answer.choices[0].text else 2.0
    assert token_confidences(logprobs) == pytest.approx([expected] * len(logprobs))
    assert all(
        [lp for _, lp in t.top] == sorted((lp for _, lp in t.top), reverse=True) for t in logprobs
    )
