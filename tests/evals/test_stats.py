"""Statistics of an evaluation, each checked against an independent computation."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from statistics import NormalDist

import pytest

from concilium.evals._stats import CurvePoint, majority_at_k, mcnemar_exact, wilson_interval

# ------------------------------------------------------------------- Wilson


def _score_test_accepts(successes: int, n: int, p: float, z: float) -> bool:
    """The score test of H0: proportion = p, the test the Wilson interval inverts."""
    return abs(successes / n - p) <= z * math.sqrt(p * (1 - p) / n)


def _brute_force_interval(
    successes: int, n: int, z: float, grid: int = 200_000
) -> tuple[float, float]:
    accepted = [i / grid for i in range(1, grid) if _score_test_accepts(successes, n, i / grid, z)]
    return accepted[0], accepted[-1]


@pytest.mark.parametrize(("successes", "n"), [(1, 10), (8, 10), (5, 10), (37, 50), (3, 200)])
def test_wilson_is_the_set_of_proportions_the_score_test_accepts(successes: int, n: int) -> None:
    z = NormalDist().inv_cdf(0.975)
    low, high = wilson_interval(successes, n)
    brute_low, brute_high = _brute_force_interval(successes, n, z)
    step = 1 / 200_000
    assert abs(low - brute_low) <= step and abs(high - brute_high) <= step


def test_wilson_contains_the_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (10, 40, 160, 640):
        low, high = wilson_interval(int(0.7 * n), n)
        assert low < 0.7 < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 4


def test_wilson_edges_touch_the_bounds_and_are_not_empty() -> None:
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2  # 0.161 for z = 1.96
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and 0.8 < low < 0.9
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_widens_with_confidence() -> None:
    narrow, wide = wilson_interval(30, 50, 0.8), wilson_interval(30, 50, 0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


@pytest.mark.parametrize(
    ("successes", "n", "confidence"), [(5, 3, 0.95), (-1, 3, 0.95), (1, 3, 1.0)]
)
def test_wilson_rejects_impossible_inputs(successes: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError, match=r"successes|confidence"):
        wilson_interval(successes, n, confidence)


# ------------------------------------------------------------------ McNemar


def _enumerated_p(b: int, c: int) -> float:
    """Two-sided: the probability of every outcome no likelier than the one seen."""
    n = b + c
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    seen = probs[b]
    return min(1.0, sum(p for p in probs if p <= seen * (1 + 1e-12)))


@pytest.mark.parametrize(("b", "c"), [(10, 2), (2, 10), (5, 5), (0, 6), (1, 0), (13, 7), (30, 12)])
def test_mcnemar_matches_enumerating_the_binomial(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(_enumerated_p(b, c), rel=1e-12)


def test_mcnemar_edges() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(4, 4) == 1.0  # capped: the two tails overlap at the centre
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(3, 9) == mcnemar_exact(9, 3)
    with pytest.raises(ValueError, match="negative"):
        mcnemar_exact(-1, 2)


# ----------------------------------------------------------- majority@k


def _plain_majority(answers: list[str | None], right: str) -> float:
    """Majority of all answers, ties as the expected value of a random break."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    return sum(a == right for a in tied) / len(tied)


def _random_items(seed: int, n_items: int, n: int) -> tuple[list[list[str | None]], list[str]]:
    rng = random.Random(seed)
    samples: list[list[str | None]] = []
    gold: list[str] = []
    for _ in range(n_items):
        samples.append([rng.choice(["a", "a", "b", "c", None]) for _ in range(n)])
        gold.append(rng.choice(["a", "b"]))
    return samples, gold


def _predicates(gold: list[str]) -> list[Callable[[str], bool]]:
    return [lambda answer, g=g: answer == g for g in gold]


def test_k_equal_n_is_the_plain_majority_and_k_one_the_single_sample_accuracy() -> None:
    samples, gold = _random_items(1, n_items=40, n=12)
    curve = majority_at_k(samples, _predicates(gold), ks=[1, 12])
    plain = sum(_plain_majority(s, g) for s, g in zip(samples, gold, strict=True)) / 40
    single = sum(sum(a == g for a in s) / 12 for s, g in zip(samples, gold, strict=True)) / 40
    assert curve[0].k == 1 and curve[0].accuracy == pytest.approx(single, abs=1e-12)
    assert curve[1].k == 12 and curve[1].accuracy == pytest.approx(plain, abs=1e-12)
    for point in curve:
        assert point.low <= point.accuracy <= point.high


def test_monte_carlo_k_stays_within_its_error_of_the_exact_value() -> None:
    """N = 14, k = 7: 3432 subsets, more than draws, so the value is sampled."""
    samples, gold = _random_items(2, n_items=30, n=14)
    draws = 400
    curve = majority_at_k(samples, _predicates(gold), ks=[7], draws=draws)
    exact = [
        sum(_plain_majority(list(sub), g) for sub in itertools.combinations(s, 7))
        / math.comb(14, 7)
        for s, g in zip(samples, gold, strict=True)
    ]
    # each item's estimate is a mean of `draws` values in [0, 1]: sd <= 0.5/sqrt(draws);
    # the mean over 30 independent items has sd <= 0.5/sqrt(draws * 30); allow 5 sd
    tolerance = 5 * 0.5 / math.sqrt(draws * len(samples))
    assert abs(curve[0].accuracy - sum(exact) / len(exact)) <= tolerance


def test_accuracy_rises_with_k_when_every_item_has_a_two_thirds_right_majority() -> None:
    samples = [["right"] * 6 + ["wrong"] * 3 for _ in range(5)]
    samples.append(["right"] * 6 + ["x", "y", "z"])
    curve = majority_at_k(samples, [lambda a: a == "right"] * 6)
    accuracies = [p.accuracy for p in curve]
    assert [p.k for p in curve] == list(range(1, 10))
    assert accuracies[0] == pytest.approx(2 / 3) and accuracies[-1] == 1.0
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(accuracies))
    # k = 1, 3, 5, 7 strictly better each time; from k = 7 the 3 wrong answers cannot win
    assert all(b > a for a, b in itertools.pairwise(accuracies[0:7:2]))
    assert accuracies[6:] == [1.0, 1.0, 1.0]
    # k = 3 by hand: the 6-right/3-wrong items win with 2 or 3 right, (45 + 20) / 84;
    # the x/y/z item wins with 2 or 3 right and a third of the time with 1 right
    assert accuracies[2] == pytest.approx((5 * 65 / 84 + (20 + 45 + 18 / 3) / 84) / 6)


def test_abstentions_are_wrong_and_ties_split() -> None:
    samples: list[list[str | None]] = [[None, None], ["a", "b"]]
    curve = majority_at_k(samples, [lambda a: True, lambda a: a == "a"], ks=[2])
    assert curve == [CurvePoint(k=2, accuracy=0.25, low=curve[0].low, high=curve[0].high)]


def test_same_seed_same_curve_and_bootstrap_interval_covers_spread() -> None:
    samples, gold = _random_items(3, n_items=25, n=16)
    first = majority_at_k(samples, _predicates(gold), seed=7)
    assert first == majority_at_k(samples, _predicates(gold), seed=7)
    assert all(0.0 <= p.low < p.high <= 1.0 for p in first)


def test_majority_at_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        majority_at_k([], [])
    with pytest.raises(ValueError, match="predicate"):
        majority_at_k([["a"]], [])
    with pytest.raises(ValueError, match=r"1\.\.2"):
        majority_at_k([["a", "b"], ["a", "b", "c"]], [bool, bool], ks=[3])
