"""DeepConf's trace confidences on hand-computed traces, and the kit recording them on
each sample turn (once, only from top-k logprobs)."""

from __future__ import annotations

import math

import pytest

from concilium.agents import AgentReply, TokenLogprob, Usage
from concilium.graphs import current_run
from concilium.graphs._confidence import group_confidences, token_confidences
from concilium.graphs.kit import DEEPCONF_WINDOW, PatternOptions, sample_turns, trace_confidences


def tok(chosen: float, *top: float) -> TokenLogprob:
    return TokenLogprob("t", chosen, tuple((f"c{i}", lp) for i, lp in enumerate(top)))


def trace(*confidences: float) -> list[TokenLogprob]:
    """A trace whose token i has the single top-k entry -c_i: its confidence is c_i."""
    return [tok(-1.0, -c) for c in confidences]


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
    with pytest.raises(ValueError, match="at least 1 token, got 0"):
        group_confidences([1.0], window=0)


def test_trace_scores_on_a_trace_with_one_unsure_stretch() -> None:
    # token confidences 4, 4, 1, 1, 4, 4; windows of 2: 4, 2.5, 1, 2.5, 4
    scores = trace_confidences(trace(4, 4, 1, 1, 4, 4), window=2)
    # the lowest 10% of 5 windows rounds up to one window; the tail is the last 2 tokens
    assert scores == pytest.approx(
        {"mean": 3.0, "lowest_group": 1.0, "bottom_10": 1.0, "tail": 4.0}
    )


def test_bottom_10_averages_the_lowest_tenth_of_the_windows() -> None:
    # 24 tokens, window 1: 24 windows, the lowest ceil(2.4) = 3 of them are 1, 2, 3
    scores = trace_confidences(trace(*range(24, 0, -1)), window=1)
    assert scores["bottom_10"] == pytest.approx(2.0)
    assert scores["lowest_group"] == 1.0 and scores["tail"] == 1.0
    assert scores["mean"] == pytest.approx(12.5)


def test_the_default_window_is_deepconfs_2048_tokens_clipped_to_the_trace() -> None:
    assert DEEPCONF_WINDOW == 2048
    # 2050 tokens: two at 1, then 2048 at 3; three windows of 2048
    scores = trace_confidences(trace(1, 1, *[3] * 2048))
    lowest = (2 * 1 + 2046 * 3) / 2048
    middle = (1 + 2047 * 3) / 2048
    assert scores["lowest_group"] == pytest.approx(lowest)
    assert scores["bottom_10"] == pytest.approx(lowest)  # ceil(3 / 10) = 1 window
    assert scores["tail"] == pytest.approx(3.0)  # the last 2048 tokens
    assert scores["mean"] == pytest.approx((2 + 2048 * 3) / 2050)
    assert middle > lowest
    # a trace shorter than the window is one group: every score is its mean
    short = trace_confidences(trace(1, 2, 6))
    assert short == pytest.approx({"mean": 3.0, "lowest_group": 3.0, "bottom_10": 3.0, "tail": 3.0})


def test_sample_turns_record_the_trace_confidences_only_from_top_logprobs() -> None:
    with_top = tuple(trace(4, 1, 4))  # windows of 2048: one group, mean 3
    chosen_only = (TokenLogprob("a", -0.5), TokenLogprob("b", -1.5))
    reply = AgentReply(
        "a", ("4", "5", "6"), Usage(9, 3), 0.1, "m", logprobs_all=(with_top, chosen_only, None)
    )
    fmt = PatternOptions("last_number").fmt
    first, second, third = sample_turns(current_run(), reply, fmt, "q")
    assert first.get("trace_confidences") == pytest.approx(
        {"mean": 3.0, "lowest_group": 3.0, "bottom_10": 3.0, "tail": 3.0}
    )
    assert first.get("mean_logprob") == -1.0
    # logprobs of the chosen tokens only: their mean, but no DeepConf scores
    assert second.get("mean_logprob") == -1.0 and "trace_confidences" not in second
    assert "trace_confidences" not in third and "mean_logprob" not in third
