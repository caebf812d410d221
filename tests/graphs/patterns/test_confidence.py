"""Soft self-consistency scores, DeepConf's filter and the weighted vote, by hand
(the trace confidences themselves: tests/graphs/test_trace_confidence.py)."""

from __future__ import annotations

import math

import pytest

from concilium.agents import TokenLogprob
from concilium.graphs.patterns._confidence import keep_top_percent, soft_score, weighted_vote


def test_soft_scores_average_probabilities_not_logprobs() -> None:
    sample = [TokenLogprob("a", math.log(0.9)), TokenLogprob("b", math.log(0.1))]
    assert soft_score(sample, "mean") == pytest.approx(0.5)
    assert soft_score(sample, "min") == pytest.approx(0.1)
    assert soft_score(sample, "prod") == pytest.approx((math.log(0.9) + math.log(0.1)) / 2)


def test_keep_top_percent_uses_the_interpolated_percentile() -> None:
    confs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    # 90th percentile of 1..10 is 9.1: only the trace at 10 survives the top 10%
    assert keep_top_percent(confs, 10) == [False] * 9 + [True]
    assert sum(keep_top_percent(confs, 90)) == 9  # 10th percentile is 1.9


def test_weighted_vote_lets_one_confident_trace_beat_two_unsure_ones() -> None:
    vote = weighted_vote(["7", "8", "8", None], [5.0, 2.0, 2.5, 9.0])
    assert vote.winner == "7" and vote.abstained == 1
    assert vote.weights == {"7": 5.0, "8": 4.5}
    assert vote.agreement == pytest.approx(5 / 9.5)
    assert weighted_vote(["a", "b"], [1.0, 1.0]).winner == "a"  # ties: first seen
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        weighted_vote(["a", "b"], [1.0])
