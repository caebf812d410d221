"""Confidence-weighted vote@k, DeepConf's filtered vote@k and the oracle's pass@k,
each computed by hand on planted samples."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import pytest

from concilium.evals._stats import (
    CurvePoint,
    _weighted_value,
    filtered_vote_at_k,
    majority_at_k,
    pass_at_k,
    weighted_vote_at_k,
)


def _is(gold: str) -> Callable[[str], bool]:
    return lambda answer: answer == gold


def _accuracies(curve: Sequence[CurvePoint]) -> list[float]:
    return [round(p.accuracy, 6) for p in curve]


def test_weighted_vote_at_k_by_hand() -> None:
    """Item 1: 4 (w 3), 5 (w 1), 5 (w 1), gold 4. Item 2: 7 (w 1), unparseable (w 5),
    8 (w 2), gold 7.

    k=1: item 1 right in 1 of 3 draws, item 2 in 1 of 3.
    k=2: item 1 {4,5}: 3 > 1, {4,5}: same, {5,5}: wrong -> 2/3; item 2 {7,-}: 7,
         {7,8}: 2 > 1 so 8, {-,8}: 8 -> 1/3.
    k=3: item 1 3 > 2 right; item 2 8 (2) beats 7 (1) -> wrong.
    """
    samples = [["4", "5", "5"], ["7", None, "8"]]
    weights = [[3.0, 1.0, 1.0], [1.0, 5.0, 2.0]]
    curve = weighted_vote_at_k(samples, weights, [_is("4"), _is("7")])
    expected = [(1 / 3 + 1 / 3) / 2, (2 / 3 + 1 / 3) / 2, (1 + 0) / 2]
    assert _accuracies(curve) == [round(v, 6) for v in expected]
    # unweighted, the same samples: k=3 is 5 over 4 (wrong) and 7 vs 8 tied (1/2)
    assert _accuracies(majority_at_k(samples, [_is("4"), _is("7")], ks=[3])) == [0.25]
    assert all(p.low <= p.accuracy <= p.high for p in curve)


def test_a_weighted_tie_counts_half_and_no_vote_counts_wrong() -> None:
    assert _accuracies(weighted_vote_at_k([["a", "b"]], [[1.0, 1.0]], [_is("a")], ks=[2])) == [0.5]
    # 0.1 + 0.2 and 0.3 are one tie, not an accident of float rounding
    assert _weighted_value([0, 1, 2], [0, 0, 1], [True, False], [0.1, 0.2, 0.3]) == 0.5
    assert _accuracies(weighted_vote_at_k([[None, None]], [[1.0, 1.0]], [_is("a")])) == [0.0, 0.0]


def test_deepconf_filters_keep_the_most_confident_eta_percent_by_hand() -> None:
    """A (5), B (1), B (2), B (3), C (4), gold A. Of all five (k=5):

    * eta=10 (DeepConf-low) keeps conf >= the 90th percentile, 4 + 0.6 * (5 - 4) = 4.6:
      only A, so right;
    * eta=90 (DeepConf-high) keeps conf >= the 10th percentile, 1 + 0.4 * (2 - 1) = 1.4:
      B 2 + 3 = 5 ties A 5 (C 4), so 1/2;
    * no filter: B 6 beats A 5, wrong; and so does the plain majority.

    At k=1 every rule keeps its one sample: 1 right of 5.
    """
    samples, weights, right = [list("ABBBC")], [[5.0, 1.0, 2.0, 3.0, 4.0]], [_is("A")]
    low = filtered_vote_at_k(samples, weights, right, keep_percent=10, ks=[1, 5])
    high = filtered_vote_at_k(samples, weights, right, keep_percent=90, ks=[1, 5])
    weighted = weighted_vote_at_k(samples, weights, right, ks=[1, 5])
    majority = majority_at_k(samples, right, ks=[1, 5])
    assert _accuracies(low) == [0.2, 1.0]
    assert _accuracies(high) == [0.2, 0.5]
    assert _accuracies(weighted) == [0.2, 0.0] == _accuracies(majority)
    # keeping 100% is the weighted vote itself
    assert _accuracies(filtered_vote_at_k(samples, weights, right, 100, ks=[5])) == [0.0]


def test_k_subsets_are_sampled_when_there_are_too_many_and_agree_with_enumeration() -> None:
    rng = random.Random(3)
    samples = [[rng.choice("aab") for _ in range(12)] for _ in range(6)]
    weights = [[rng.random() for _ in range(12)] for _ in range(6)]
    right = [_is("a")] * 6

    def exact(k: int) -> float:  # every k-subset, item by item
        total = 0.0
        for answers, w in zip(samples, weights, strict=True):
            codes = [0 if a == "a" else 1 for a in answers]
            subsets = list(itertools.combinations(range(12), k))
            total += sum(_weighted_value(s, codes, [True, False], w) for s in subsets) / len(
                subsets
            )
        return total / len(samples)

    (sampled,) = weighted_vote_at_k(samples, weights, right, ks=[6], draws=400)  # C(12,6) = 924
    assert sampled.accuracy == pytest.approx(exact(6), abs=0.05)
    (enumerated,) = weighted_vote_at_k(samples, weights, right, ks=[6], draws=1000)
    assert enumerated.accuracy == pytest.approx(exact(6), abs=1e-12)


def test_pass_at_k_is_one_minus_the_chance_that_all_k_miss() -> None:
    """Four items of N=4 with c = 0, 1, 2, 4 right samples (an unparseable one is
    wrong): pass@k = 1 - C(N-c, k) / C(N, k), averaged over items."""
    samples = [list("bbbb"), ["a", "b", None, "b"], list("aabb"), list("aaaa")]
    curve = pass_at_k(samples, [_is("a")] * 4)
    by_hand = {
        1: (0 + 1 / 4 + 2 / 4 + 1) / 4,
        2: (0 + (1 - 3 / 6) + (1 - 1 / 6) + 1) / 4,
        3: (0 + (1 - 1 / 4) + 1 + 1) / 4,
        4: (0 + 1 + 1 + 1) / 4,
    }
    assert [p.k for p in curve] == [1, 2, 3, 4]
    for p in curve:
        formula = sum(
            1 - math.comb(4 - c, p.k) / math.comb(4, p.k) for c in (0, 1, 2, 4)
        ) / 4  # fmt: skip
        assert p.accuracy == pytest.approx(by_hand[p.k]) == pytest.approx(formula)
    # the oracle bounds the vote from above at every k
    majority = majority_at_k(samples, [_is("a")] * 4)
    assert all(o.accuracy >= m.accuracy for o, m in zip(curve, majority, strict=True))


def test_bad_weights_and_filters_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="log-probability is negative"):
        weighted_vote_at_k([["a"]], [[-0.5]], [_is("a")])
    with pytest.raises(ValueError, match="one confidence per sample"):
        weighted_vote_at_k([["a", "b"]], [[1.0]], [_is("a")])
    with pytest.raises(ValueError, match="keep_percent"):
        filtered_vote_at_k([["a"]], [[1.0]], [_is("a")], keep_percent=0)
    with pytest.raises(ValueError, match="pass_at_k needs at least one item"):
        pass_at_k([], [])
