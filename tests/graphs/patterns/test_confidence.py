"""DeepConf and soft self-consistency scores on hand-computed traces."""

from __future__ import annotations

import math

import pytest

from concilium.agents import TokenLogprob
from concilium.graphs.patterns._confidence import (
    group_confidences,
    keep_top_percent,
    soft_score,
    token_confidences,
    trace_confidence,
    weighted_vote,
)


def tok(chosen: float, *top: float) -> TokenLogprob:
    return TokenLogprob("t", chosen, tuple((f"c{i}", lp) for i, lp in enumerate(top)))


def test_token_confidence_is_minus_the_mean_of_the_top_k_not_the_chosen_token() -> None:
    # chosen logprob -0.1 plays no part: C = -(-0.1 - 2.3 - 4.6)/3 = 7/3
    assert token_confidences([tok(-0.1, -0.1, -2.3, -4.6)]) == pytest.approx([7 / 3])
    uniform = tok(math.log(1 / 20), *[math.log(1 / 20)] * 20)
    assert token_confidences([uniform])[0] == pytest.approx(math.log(20))  # 2.996, as in the paper


def test_without_top_logprobs_the_error_says_what_to_request() -> None:
    with pytest.raises(ValueError, match="top_logprobs=20"):
        token_confidences([TokenLogprob("x", -0.5)])


def test_group_confidence_slides_with_stride_one_and_averages_short_traces() -> None:
    assert group_confidences([1, 2, 3, 4, 5], window=3) == [2.0, 3.0, 4.0]
    assert group_confidences([1, 2], window=3) == [1.5]


def test_trace_scores_on_a_trace_with_one_unsure_stretch() -> None:
    # token confidences 4, 4, 1, 1, 4, 4 (from top lists of a single entry)
    trace = [tok(-1, -c) for c in (4, 4, 1, 1, 4, 4)]
    assert trace_confidence(trace, "mean") == pytest.approx(3.0)
    assert trace_confidence(trace, "lowest_group", window=2) == pytest.approx(1.0)
    assert trace_confidence(trace, "tail", window=2) == pytest.approx(4.0)
    # windows of 2: 4, 2.5, 1, 2.5, 4 -> lowest 10% rounds up to one window
    assert trace_confidence(trace, "bottom_10", window=2) == pytest.approx(1.0)


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
