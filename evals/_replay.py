# pyright: strict
"""Early stopping, replayed on stored samples: had the N samples of an item been drawn
one at a time in their stored order, when would a stopping rule have stopped, with
what answer, at what cost? One sampling run answers that for every rule, with no new
calls.

The rules (``docs/evaluation.md#early-stopping``), each a pure function of the answers
in order, returning a :class:`StopPoint`:

* :func:`beta_stop`, Adaptive-Consistency's default (Aggarwal et al., 2023): with ``a``
  votes for the leading answer and ``b`` for the runner-up (others ignored), stop
  when ``P(p1 > 1/2)`` under a ``Beta(a+1, b+1)`` posterior, which is
  ``P(Binomial(a+b+1, 1/2) <= a)``, reaches the threshold (0.95).
* :func:`majority_stop`, Adaptive-Consistency's majority rule: more than one sample and
  the leader's share of the samples drawn at least the threshold (0.8).
* :func:`entropy_stop`, Adaptive-Consistency's entropy rule: more than one sample and
  the answers' entropy over ``log2`` of the number of distinct answers at most the
  threshold (0.75); with one distinct answer the authors' code adds a phantom answer
  of count 1 (``A A A A`` is the first all-agreeing run to stop), and so does this.
* :func:`window_stop`, ESC (Li et al., 2024): samples come in windows of ``w`` (5); stop
  after a window whose answers all agree, with that answer.

Without a stop the budget (all N) is drawn and the answer is the majority of all.
Unparseable samples (``None``) count toward the budget and the share of the
majority rule, as in the reference, but are nobody's vote; a window of them does not
agree. Ties between leading answers are kept (``StopPoint.tied``): an accuracy counts
them as the expected value of a random tie break, as majority@k does, and
``StopPoint.answer`` is the first seen of them (the reference's ``Counter`` order).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._cost import SamplingCost
from ._stats import mean_interval

__all__ = [
    "StopPoint",
    "StopRule",
    "STOP_RULES",
    "beta_probability",
    "beta_stop",
    "majority_stop",
    "entropy_stop",
    "window_stop",
    "fixed_stop",
    "ReplayItem",
    "RuleOutcome",
    "replay_rules",
]


@dataclass(frozen=True)
class StopPoint:
    """Where a rule stopped: after ``samples`` samples (all N if it never did), and
    the leading answers then (``tied``, first seen first; empty if none answered)."""

    samples: int
    tied: tuple[str, ...]
    stopped: bool

    @property
    def answer(self) -> str | None:
        """The rule's answer: the first seen of the tied leaders."""
        return self.tied[0] if self.tied else None


def _leaders(answers: Sequence[str | None]) -> tuple[str, ...]:
    counts = Counter(a for a in answers if a is not None)
    top = max(counts.values(), default=0)
    return tuple(a for a, c in counts.items() if c == top)  # insertion order: first seen


def _check(answers: Sequence[str | None], threshold: float | None = None) -> None:
    if not answers:
        raise ValueError("a stopping rule needs at least one sample; the answers are empty")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"a stopping threshold lies in (0, 1], got {threshold!r}")


def _first_stop(
    answers: Sequence[str | None], settled: Callable[[Sequence[str | None]], bool]
) -> StopPoint:
    for n in range(1, len(answers) + 1):
        if settled(answers[:n]):
            return StopPoint(n, _leaders(answers[:n]), True)
    return StopPoint(len(answers), _leaders(answers), False)


def beta_probability(a: int, b: int) -> float:
    """``P(p1 > 1/2)`` under ``Beta(a+1, b+1)``, in closed form ``P(Bin(a+b+1, 1/2) <= a)``.

    Example:
        >>> beta_probability(4, 0), beta_probability(0, 0)
        (0.96875, 0.5)
    """
    n = a + b + 1
    return math.fsum(math.comb(n, i) for i in range(a + 1)) / 2.0**n


def beta_stop(answers: Sequence[str | None], threshold: float = 0.95) -> StopPoint:
    """Adaptive-Consistency's Beta rule.

    Example:
        >>> beta_stop(list("ABAAAAA")).samples, beta_stop(list("ABCAAAAA")).samples
        (7, 8)
    """
    _check(answers, threshold)

    def settled(drawn: Sequence[str | None]) -> bool:
        counts = [c for _, c in Counter(a for a in drawn if a is not None).most_common(2)]
        if not counts:
            return False
        return beta_probability(counts[0], counts[1] if len(counts) > 1 else 0) >= threshold

    return _first_stop(answers, settled)


def majority_stop(answers: Sequence[str | None], threshold: float = 0.8) -> StopPoint:
    """Adaptive-Consistency's majority rule (the share counts unparseable samples).

    Example:
        >>> majority_stop(list("ABAAA")).samples
        5
    """
    _check(answers, threshold)

    def settled(drawn: Sequence[str | None]) -> bool:
        counts = Counter(a for a in drawn if a is not None)
        return len(drawn) > 1 and bool(counts) and max(counts.values()) / len(drawn) >= threshold

    return _first_stop(answers, settled)


def entropy_stop(answers: Sequence[str | None], threshold: float = 0.75) -> StopPoint:
    """Adaptive-Consistency's entropy rule, with the reference's phantom answer.

    Example:
        >>> entropy_stop(list("ABAAA")).samples, entropy_stop(list("AAAAA")).samples
        (5, 4)
    """
    _check(answers, threshold)

    def settled(drawn: Sequence[str | None]) -> bool:
        counts = list(Counter(a for a in drawn if a is not None).values())
        if len(drawn) == 1 or not counts:
            return False
        if len(counts) == 1:
            counts.append(1)  # the reference's guard against log2(1) = 0
        total = sum(counts)
        entropy = -math.fsum(c / total * math.log2(c / total) for c in counts)
        return entropy / math.log2(len(counts)) <= threshold

    return _first_stop(answers, settled)


def window_stop(answers: Sequence[str | None], window: int = 5) -> StopPoint:
    """ESC: after each full window of ``window`` samples, stop if they all give the
    same answer (and return it, as the authors' code does, even when another answer
    leads all the samples drawn); a last, shorter window is drawn but not tested.

    Example:
        >>> window_stop(list("BBBBABBBBAAAAAA"), window=5)
        StopPoint(samples=15, tied=('A',), stopped=True)
    """
    _check(answers)
    if window < 1:
        raise ValueError(f"the ESC window is at least 1 sample, got {window!r}")
    for end in range(window, len(answers) + 1, window):
        seen = set(answers[end - window : end])
        if len(seen) == 1 and None not in seen:
            return StopPoint(end, (str(answers[end - 1]),), True)
    return StopPoint(len(answers), _leaders(answers), False)


def fixed_stop(answers: Sequence[str | None]) -> StopPoint:
    """No early stop: every sample, the majority of all (the budget, for comparison).

    Example:
        >>> fixed_stop(["7", "8", None, "8"])
        StopPoint(samples=4, tied=('8',), stopped=False)
    """
    _check(answers)
    return StopPoint(len(answers), _leaders(answers), False)


@dataclass(frozen=True)
class StopRule:
    """A named rule and its parameter, as reported (``beta`` with threshold 0.95)."""

    name: str
    parameter: str
    value: float
    stop: Callable[[Sequence[str | None]], StopPoint]

    @property
    def label(self) -> str:
        """``beta(threshold=0.95)``."""
        return f"{self.name}({self.parameter}={self.value:g})"


STOP_RULES = (
    StopRule("beta", "threshold", 0.95, lambda a: beta_stop(a, 0.95)),
    StopRule("majority", "threshold", 0.8, lambda a: majority_stop(a, 0.8)),
    StopRule("entropy", "threshold", 0.75, lambda a: entropy_stop(a, 0.75)),
    StopRule("esc", "window", 5, lambda a: window_stop(a, 5)),
)
"""The rules the summary replays, at the authors' defaults (Adaptive-Consistency's
``stopping_criterias.py``; ESC's window of 5)."""


# ------------------------------------------------------------ over an eval's items


@dataclass(frozen=True)
class ReplayItem:
    """One item's stored samples, in order: answers, a predicate for a right answer,
    each sample's own completion tokens (``None`` where not known exactly), and how the
    samples were drawn (``None``: the method made other calls, so no derived cost)."""

    answers: Sequence[str | None]
    is_right: Callable[[str], bool]
    tokens: Sequence[int | None]
    cost: SamplingCost | None


TokensBasis = Literal["exact", "expected", "mixed"]


@dataclass(frozen=True)
class RuleOutcome:
    """A rule replayed over every item: means per item, the share of items it stopped
    before their last sample (``stopped``), accuracy at the stop with its interval.

    ``tokens_basis`` says how the completions drawn were counted: ``exact`` (each
    sample's own tokens, known for every item), ``expected`` (``k/N`` of the
    request's completion tokens: no sample's own count was known), ``mixed``.
    """

    rule: StopRule
    samples: float
    stopped: float
    accuracy: float
    low: float
    high: float
    tokens: float | None
    calls: float | None
    tokens_basis: TokensBasis | None


def _expected_right(point: StopPoint, is_right: Callable[[str], bool]) -> float:
    return sum(is_right(a) for a in point.tied) / len(point.tied) if point.tied else 0.0


def _cost_at(item: ReplayItem, drawn: int) -> tuple[float, int, bool] | None:
    """(tokens, requests, exact) of drawing the first ``drawn`` samples in the item's
    mode: its prompts as ``SamplingCost.at`` prices them, plus the completions of
    those samples, their own counts when all are known, else ``drawn/N`` of the total."""
    if item.cost is None:
        return None
    tokens, requests = item.cost.at(drawn)
    own = item.tokens[:drawn]
    if len(own) == drawn and all(t is not None for t in own):
        expected = drawn * item.cost.completion_tokens / item.cost.samples
        return tokens - expected + sum(t for t in own if t is not None), requests, True
    return tokens, requests, False


def replay_rules(
    items: Sequence[ReplayItem],
    rules: Sequence[StopRule] = STOP_RULES,
    seed: int = 0,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[RuleOutcome]:
    """Each rule replayed on every item's stored order, then the fixed budget (every
    sample, the majority of all) for comparison, in that order.

    Example:
        >>> item = ReplayItem(list("AAAAB"), lambda a: a == "A", [10] * 5, None)
        >>> [(o.rule.name, o.samples, o.accuracy) for o in replay_rules([item])][::4]
        [('beta', 4.0, 1.0), ('fixed', 5.0, 1.0)]
    """
    if not items:
        raise ValueError("replay_rules needs at least one item")
    budget = StopRule("fixed", "N", len(items[0].answers), fixed_stop)
    outcomes: list[RuleOutcome] = []
    for rule in [*rules, budget]:
        points = [rule.stop(item.answers) for item in items]
        right = [_expected_right(p, item.is_right) for p, item in zip(points, items, strict=True)]
        accuracy, low, high = mean_interval(right, seed, resamples=resamples, confidence=confidence)
        costs = [_cost_at(item, p.samples) for p, item in zip(points, items, strict=True)]
        known = [c for c in costs if c is not None]
        tokens = calls = basis = None
        if len(known) == len(items):  # every item's cost, or none shown
            tokens = sum(t for t, _, _ in known) / len(known)
            calls = sum(r for _, r, _ in known) / len(known)
            exact = sum(e for _, _, e in known)
            basis = "exact" if exact == len(known) else "expected" if not exact else "mixed"
        outcomes.append(
            RuleOutcome(
                rule,
                samples=sum(p.samples for p in points) / len(points),
                stopped=sum(
                    p.samples < len(item.answers) for p, item in zip(points, items, strict=True)
                )
                / len(points),
                accuracy=accuracy,
                low=low,
                high=high,
                tokens=tokens,
                calls=calls,
                tokens_basis=basis,
            )
        )
    return outcomes
