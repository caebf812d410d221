# pyright: strict
"""The statistics an evaluation reports: intervals, paired tests, majority@k curves.

Pure Python (``math``, ``random``, ``statistics``): an evaluation summary needs no
scipy. Three questions, one function each:

- how sure is an accuracy measured on ``n`` items? :func:`wilson_interval`;
- is method A better than method B on the same items? :func:`mcnemar_exact`;
- what would majority voting over ``k`` samples score, for every ``k`` up to the
  ``N`` samples drawn once per item? :func:`majority_at_k`; and a vote weighted by
  each sample's confidence (:func:`weighted_vote_at_k`), DeepConf's vote over the
  most confident of the ``k`` (:func:`filtered_vote_at_k`), or an oracle that is right
  when any of the ``k`` is (:func:`pass_at_k`)?
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "CurvePoint",
    "majority_at_k",
    "weighted_vote_at_k",
    "filtered_vote_at_k",
    "pass_at_k",
    "mcnemar_exact",
    "wilson_interval",
]


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n``.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at
    0/n or n/n, which matters for the small item counts evaluations run on.

    Args:
        successes: Items answered correctly, ``0 <= successes <= n``.
        n: Items scored; ``n == 0`` says nothing, so the interval is (0, 1).
        confidence: Coverage of the interval, e.g. 0.95.

    Returns:
        ``(low, high)``, both in [0, 1].

    Example:
        >>> low, high = wilson_interval(8, 10)
        >>> round(low, 3), round(high, 3)
        (0.49, 0.943)
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(
            f"need 0 <= successes <= n, got successes={successes!r}, n={n!r}; "
            "pass the count of correct items and the count of scored items"
        )
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # at 0/n and n/n the formula lands on the bound up to rounding; say it exactly
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """The exact McNemar test: a two-sided p-value for paired right/wrong outcomes.

    Only the discordant items count: ``b`` where the first method is right and
    the second wrong, ``c`` the opposite. Under the null hypothesis (both methods
    equally good) each discordant item falls either way with probability 1/2, so
    the p-value is a two-sided binomial test on ``b`` of ``b + c`` at p = 0.5.

    Args:
        b: Items the first method gets right and the second wrong.
        c: Items the second method gets right and the first wrong.

    Returns:
        The p-value, at most 1.0; 1.0 when there are no discordant items.

    Example:
        >>> round(mcnemar_exact(10, 2), 4)
        0.0386
        >>> mcnemar_exact(0, 0)
        1.0
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts cannot be negative, got b={b!r}, c={c!r}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


@dataclass(frozen=True)
class CurvePoint:
    """Majority@k accuracy with its bootstrap interval over items.

    Example:
        >>> CurvePoint(k=3, accuracy=0.8, low=0.7, high=0.9).k
        3
    """

    k: int
    accuracy: float
    low: float
    high: float


def _majority_value(codes: Sequence[int], right: Sequence[bool]) -> float:
    """Expected correctness of the majority of ``codes`` (-1 abstains), ties at random."""
    counts: dict[int, int] = {}
    for code in codes:
        if code >= 0:
            counts[code] = counts.get(code, 0) + 1
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [code for code, count in counts.items() if count == top]
    return sum(right[code] for code in tied) / len(tied)


def _prefix_values(order: Sequence[int], right: Sequence[bool]) -> list[float]:
    """Majority correctness of every prefix of ``order``: entry k-1 is the first k.

    A uniformly random permutation's first k entries are a uniformly random
    k-subset, so one permutation gives one draw for every k at once.
    """
    counts: dict[int, int] = {}
    top = 0
    tied: set[int] = set()
    tied_right = 0
    values: list[float] = []
    for code in order:
        if code >= 0:
            count = counts.get(code, 0) + 1
            counts[code] = count
            if count > top:
                top, tied, tied_right = count, {code}, int(right[code])
            elif count == top:
                tied.add(code)
                tied_right += right[code]
        values.append(tied_right / len(tied) if tied else 0.0)
    return values


def _item_values(
    codes: list[int], right: list[bool], ks: Sequence[int], draws: int, rng: random.Random
) -> dict[int, float]:
    """One item's expected majority correctness for each k: exact where it is cheap."""
    n = len(codes)
    values: dict[int, float] = {}
    sampled = [k for k in ks if math.comb(n, k) > draws]
    for k in ks:
        if k not in sampled:  # every subset, at most `draws` of them (k == N is one)
            subsets = itertools.combinations(codes, k)
            values[k] = sum(_majority_value(s, right) for s in subsets) / math.comb(n, k)
    if sampled:
        totals = [0.0] * n
        for _ in range(draws):
            for i, value in enumerate(_prefix_values(rng.sample(codes, n), right)):
                totals[i] += value
        for k in sampled:
            values[k] = totals[k - 1] / draws
    return values


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _encode(
    answers: Sequence[str | None], is_right: Callable[[str], bool]
) -> tuple[list[int], list[bool]]:
    """Answers as small integers (-1 abstains) and each distinct answer's correctness."""
    index: dict[str, int] = {}
    right: list[bool] = []
    codes: list[int] = []
    for answer in answers:
        if answer is None:
            codes.append(-1)
            continue
        if answer not in index:
            index[answer] = len(right)
            right.append(bool(is_right(answer)))
        codes.append(index[answer])
    return codes, right


def _check_ks(samples: Sequence[Sequence[str | None]], ks: Sequence[int] | None) -> list[int]:
    smallest = min(len(answers) for answers in samples)
    if ks is None:
        return list(range(1, smallest + 1))
    bad = [k for k in ks if not 1 <= k <= smallest]
    if bad:
        raise ValueError(
            f"ks must lie in 1..{smallest} (the fewest samples any item has), got {bad}; "
            "draw more samples per item or drop those k"
        )
    return sorted(set(ks))


def majority_at_k(
    samples: Sequence[Sequence[str | None]],
    correct: Sequence[Callable[[str], bool]],
    ks: Sequence[int] | None = None,
    draws: int = 200,
    seed: int = 0,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[CurvePoint]:
    """Majority-vote accuracy for every k up to N, from N samples drawn once per item.

    For each item and each k, the expected correctness of the majority answer of
    k samples drawn without replacement from the item's N: exact over every
    k-subset when there are at most ``draws`` of them (always for k == N and,
    when N <= draws, for k == 1), otherwise a Monte Carlo mean over ``draws``
    random subsets. Ties count as the expected value of a random tie break; a
    subset of abstentions only (``None``) is wrong. The accuracy is the mean over
    items; ``low``/``high`` are a percentile bootstrap over items.

    Args:
        samples: Per item, its sampled answers (``None`` is an abstention).
        correct: Per item, a predicate telling whether an answer is right.
        ks: The k to report (default every k from 1 to the fewest samples).
        draws: Random subsets per item and k when enumerating them costs more.
        seed: Seed for the subsets and the bootstrap; the same seed, the same curve.
        resamples: Bootstrap resamples of the items.
        confidence: Coverage of the bootstrap interval.

    Returns:
        One :class:`CurvePoint` per k, in increasing k.

    Example:
        >>> samples = [["4", "4", "5"], ["7", "6", "6"]]
        >>> correct = [lambda a: a == "4", lambda a: a == "7"]
        >>> [round(p.accuracy, 3) for p in majority_at_k(samples, correct)]
        [0.5, 0.5, 0.5]
    """
    _check_curve_args(samples, correct, draws, resamples, confidence, "majority_at_k")
    chosen = _check_ks(samples, ks)
    rng = random.Random(seed)
    per_item: list[dict[int, float]] = []
    for answers, is_right in zip(samples, correct, strict=True):
        codes, right = _encode(answers, is_right)
        per_item.append(_item_values(codes, right, chosen, draws, rng))
    return _bootstrap(per_item, chosen, rng, resamples, confidence)


def _bootstrap(
    per_item: Sequence[Mapping[int, float]],
    chosen: Sequence[int],
    rng: random.Random,
    resamples: int,
    confidence: float,
) -> list[CurvePoint]:
    """The mean over items of each k's values, with a percentile bootstrap over items."""
    n_items = len(per_item)
    columns = {k: [values[k] for values in per_item] for k in chosen}
    boot: dict[int, list[float]] = {k: [] for k in chosen}
    for _ in range(resamples):
        picked = [rng.randrange(n_items) for _ in range(n_items)]
        for k in chosen:
            boot[k].append(sum(map(columns[k].__getitem__, picked)) / n_items)
    tail = (1.0 - confidence) / 2.0
    points: list[CurvePoint] = []
    for k in chosen:
        ordered = sorted(boot[k])
        accuracy = sum(columns[k]) / n_items
        points.append(
            CurvePoint(k, accuracy, _quantile(ordered, tail), _quantile(ordered, 1.0 - tail))
        )
    return points


def mean_interval(
    values: Sequence[float], seed: int = 0, *, resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """The mean of per-item values with a percentile bootstrap interval over items:
    ``(mean, low, high)``.

    Example:
        >>> mean_interval([1.0, 1.0, 1.0])
        (1.0, 1.0, 1.0)
    """
    if not values:
        raise ValueError("mean_interval needs at least one item's value")
    _z(confidence)
    (point,) = _bootstrap([{1: v} for v in values], [1], random.Random(seed), resamples, confidence)
    return point.accuracy, point.low, point.high


# ------------------------------------------------- votes that weigh confidence


def _check_curve_args(
    samples: Sequence[Sequence[str | None]],
    correct: Sequence[Callable[[str], bool]],
    draws: int,
    resamples: int,
    confidence: float,
    name: str,
) -> None:
    if not samples:
        raise ValueError(f"{name} needs at least one item; samples is empty")
    if len(correct) != len(samples):
        raise ValueError(
            f"one predicate per item: {len(samples)} items but {len(correct)} predicates"
        )
    if draws < 1 or resamples < 1:
        raise ValueError(f"draws and resamples must be >= 1, got {draws!r} and {resamples!r}")
    _z(confidence)  # checks the range


def _check_weights(
    samples: Sequence[Sequence[str | None]], weights: Sequence[Sequence[float]]
) -> None:
    if len(weights) != len(samples) or any(
        len(w) != len(a) for w, a in zip(weights, samples, strict=False)
    ):
        raise ValueError("weights must give one confidence per sample of every item")
    bad = [w for ws in weights for w in ws if not (w >= 0.0 and math.isfinite(w))]
    if bad:
        raise ValueError(
            f"confidences weigh votes, so they must be finite and >= 0; got {bad[0]!r} "
            "(a log-probability is negative: use a DeepConf confidence or a probability)"
        )


def _weighted_value(
    picked: Sequence[int], codes: Sequence[int], right: Sequence[bool], weights: Sequence[float]
) -> float:
    """Expected correctness of ``argmax_a sum(w_i [answer_i = a])`` over the picked
    samples (abstentions carry no vote), ties at random."""
    tally: dict[int, float] = {}
    for i in picked:
        if codes[i] >= 0:
            tally[codes[i]] = tally.get(codes[i], 0.0) + weights[i]
    if not tally:
        return 0.0
    top = max(tally.values())
    # sums of the same weights in another order can differ in the last bits
    tied = [code for code, total in tally.items() if total >= top - 1e-9 * max(1.0, top)]
    return sum(right[code] for code in tied) / len(tied)


def _filtered_value(
    picked: Sequence[int],
    codes: Sequence[int],
    right: Sequence[bool],
    weights: Sequence[float],
    keep_percent: float,
) -> float:
    """DeepConf offline on the picked samples: keep those whose confidence is at least
    the ``100 - keep_percent`` percentile of the picked (linear, numpy's default, as
    DeepConf's reference computes it), then the weighted vote."""
    threshold = _quantile(sorted(weights[i] for i in picked), (100 - keep_percent) / 100)
    return _weighted_value([i for i in picked if weights[i] >= threshold], codes, right, weights)


def _subset_curve(
    samples: Sequence[Sequence[str | None]],
    correct: Sequence[Callable[[str], bool]],
    value: Callable[[int, Sequence[int], list[int], list[bool]], float],
    ks: Sequence[int] | None,
    draws: int,
    seed: int,
    resamples: int,
    confidence: float,
) -> list[CurvePoint]:
    """``value(item, picked, codes, right)`` averaged over the k-subsets of each item's
    samples (every subset when there are at most ``draws``, else ``draws`` random
    ones: prefixes of random orders), then over items with a bootstrap interval."""
    chosen = _check_ks(samples, ks)
    rng = random.Random(seed)
    per_item: list[dict[int, float]] = []
    for item, (answers, is_right) in enumerate(zip(samples, correct, strict=True)):
        codes, right = _encode(answers, is_right)
        n = len(codes)
        values: dict[int, float] = {}
        sampled = [k for k in chosen if math.comb(n, k) > draws]
        for k in chosen:
            if k not in sampled:
                subsets = itertools.combinations(range(n), k)
                total = sum(value(item, s, codes, right) for s in subsets)
                values[k] = total / math.comb(n, k)
        if sampled:
            totals = dict.fromkeys(sampled, 0.0)
            for _ in range(draws):
                order = rng.sample(range(n), n)
                for k in sampled:
                    totals[k] += value(item, order[:k], codes, right)
            values.update({k: totals[k] / draws for k in sampled})
        per_item.append(values)
    return _bootstrap(per_item, chosen, rng, resamples, confidence)


def weighted_vote_at_k(
    samples: Sequence[Sequence[str | None]],
    weights: Sequence[Sequence[float]],
    correct: Sequence[Callable[[str], bool]],
    ks: Sequence[int] | None = None,
    draws: int = 200,
    seed: int = 0,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[CurvePoint]:
    """Confidence-weighted vote accuracy for every k up to N, from N samples per item.

    The answer of k samples is ``argmax_a sum_i w_i [answer_i = a]`` (DeepConf's vote,
    ``w_i`` the sample's confidence); the rest is as :func:`majority_at_k`: the
    expected correctness over k-subsets (exact, or ``draws`` random ones), ties at
    random, an all-abstaining subset wrong, a bootstrap interval over items.

    Args:
        weights: Per item, one confidence (finite, >= 0) per sample.

    Example:
        >>> samples = [["4", "5", "5"]]
        >>> [
        ...     round(p.accuracy, 3)
        ...     for p in weighted_vote_at_k(samples, [[3.0, 1.0, 1.0]], [lambda a: a == "4"])
        ... ]
        [0.333, 0.667, 1.0]
    """
    _check_curve_args(samples, correct, draws, resamples, confidence, "weighted_vote_at_k")
    _check_weights(samples, weights)

    def value(item: int, picked: Sequence[int], codes: list[int], right: list[bool]) -> float:
        return _weighted_value(picked, codes, right, weights[item])

    return _subset_curve(samples, correct, value, ks, draws, seed, resamples, confidence)


def filtered_vote_at_k(
    samples: Sequence[Sequence[str | None]],
    weights: Sequence[Sequence[float]],
    correct: Sequence[Callable[[str], bool]],
    keep_percent: float,
    ks: Sequence[int] | None = None,
    draws: int = 200,
    seed: int = 0,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[CurvePoint]:
    """DeepConf's filtered vote for every k up to N: of the k samples drawn, keep those
    whose confidence is at least the ``100 - keep_percent`` percentile of the k
    (numpy's linear percentile), then vote them weighted by confidence.

    ``keep_percent`` is the paper's eta: 10 keeps the most confident tenth
    ("DeepConf-low", aggressive), 90 keeps nine tenths ("DeepConf-high",
    conservative). Otherwise as :func:`weighted_vote_at_k`.

    Example:
        >>> samples, weights = [["4", "5", "5"]], [[3.0, 1.0, 1.0]]
        >>> curve = filtered_vote_at_k(samples, weights, [lambda a: a == "4"], keep_percent=10)
        >>> [round(p.accuracy, 3) for p in curve]  # k=2 and k=3 keep the 3.0 sample
        [0.333, 0.667, 1.0]
    """
    _check_curve_args(samples, correct, draws, resamples, confidence, "filtered_vote_at_k")
    _check_weights(samples, weights)
    if not 0 < keep_percent <= 100:
        raise ValueError(f"keep_percent must be in (0, 100], got {keep_percent!r}")

    def value(item: int, picked: Sequence[int], codes: list[int], right: list[bool]) -> float:
        return _filtered_value(picked, codes, right, weights[item], keep_percent)

    return _subset_curve(samples, correct, value, ks, draws, seed, resamples, confidence)


def pass_at_k(
    samples: Sequence[Sequence[str | None]],
    correct: Sequence[Callable[[str], bool]],
    ks: Sequence[int] | None = None,
    seed: int = 0,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[CurvePoint]:
    """The oracle's accuracy for every k up to N: an item counts as right when any of
    k samples drawn without replacement is. Not a method (something must know which
    sample is right); an upper bound on any rule that picks one of the k.

    Exact: with ``c`` right samples of ``N``, ``1 - C(N-c, k) / C(N, k)`` per item,
    averaged over items, with a bootstrap interval over items.

    Example:
        >>> samples = [["4", "5", "6"], ["7", "7", "7"]]
        >>> curve = pass_at_k(samples, [lambda a: a == "4", lambda a: a == "8"])
        >>> [round(p.accuracy, 3) for p in curve]  # item 1: 1/3, 2/3, 1; item 2: 0
        [0.167, 0.333, 0.5]
    """
    _check_curve_args(samples, correct, 1, resamples, confidence, "pass_at_k")
    chosen = _check_ks(samples, ks)
    per_item: list[dict[int, float]] = []
    for answers, is_right in zip(samples, correct, strict=True):
        n = len(answers)
        c = sum(1 for a in answers if a is not None and is_right(a))
        per_item.append({k: 1.0 - math.comb(n - c, k) / math.comb(n, k) for k in chosen})
    return _bootstrap(per_item, chosen, random.Random(seed), resamples, confidence)
