"""DeepConf's incremental window confidence against the batch definition, and the
online threshold's percentile (which way ``keep_percent`` goes)."""

from __future__ import annotations

import random

import pytest

from concilium.agents import TokenLogprob
from concilium.graphs._confidence import (
    WindowConfidence,
    deepconf_threshold,
    group_confidences,
    token_confidences,
    trace_confidences,
)


def random_trace(rng: random.Random, length: int, k: int) -> list[TokenLogprob]:
    return [
        TokenLogprob("t", -rng.random(), tuple((f"c{j}", -rng.expovariate(0.5)) for j in range(k)))
        for _ in range(length)
    ]


@pytest.mark.parametrize("window", [1, 3, 16, 50])
@pytest.mark.parametrize("length", [1, 7, 49, 50, 51, 400])
def test_each_step_is_the_batch_group_confidence_and_lowest_is_the_batch_lowest_group(
    window: int, length: int
) -> None:
    rng = random.Random(window * 1000 + length)
    trace = random_trace(rng, length, k=5)
    tracker = WindowConfidence(window)
    for i, token in enumerate(trace):
        group = tracker.add(token.top)
        prefix = token_confidences(trace[: i + 1])
        # after each token: the batch definition's last window of the prefix
        assert group == pytest.approx(group_confidences(prefix, window)[-1], rel=1e-9)
        assert tracker.lowest == pytest.approx(
            trace_confidences(trace[: i + 1], window)["lowest_group"], rel=1e-9
        )
        assert tracker.full == (i + 1 >= window)
    assert tracker.tokens == length and len(tracker.curve) == length


def test_a_token_without_top_logprobs_says_what_to_request() -> None:
    with pytest.raises(ValueError, match="top_logprobs=20"):
        WindowConfidence(4).add(())
    with pytest.raises(ValueError, match="at least 1 token, got 0"):
        WindowConfidence(0)


def test_keep_10_sets_the_threshold_at_the_90th_percentile_and_keep_90_at_the_10th() -> None:
    lowest = [float(x) for x in range(1, 12)]  # 1..11
    assert deepconf_threshold(lowest, 10) == pytest.approx(10.0)  # aggressive: few pass
    assert deepconf_threshold(lowest, 90) == pytest.approx(2.0)  # conservative: most pass
    assert deepconf_threshold([3.0], 10) == 3.0
    with pytest.raises(ValueError, match="at least one warm-up trace"):
        deepconf_threshold([], 10)
    with pytest.raises(ValueError, match=r"\(0, 100\], got 0"):
        deepconf_threshold(lowest, 0)
