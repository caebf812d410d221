"""Confidence-weighted votes, and soft self-consistency's score of a sample.

Two families (``docs/methods.md#confidence-consistency``):

* DeepConf (Fu et al., 2025): each trace's confidence comes from its top-k logprobs
  (``concilium.graphs.kit.trace_confidences``: token confidence, group confidence
  over a sliding window, and the trace scores ``mean``, ``lowest_group``,
  ``bottom_10``, ``tail``); here, which traces to keep (:func:`keep_top_percent`)
  and the vote they cast, each weighted by its confidence (:func:`weighted_vote`).
* Soft self-consistency (Wang et al., 2024): the chosen tokens' probabilities,
  ``mean`` (of probabilities, not logprobs), ``min`` or ``prod`` (mean logprob).

Example:
    >>> weighted_vote(["7", "8"], [2.5, 1.0]).winner
    '7'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from concilium.agents import TokenLogprob

SoftScore = Literal["mean", "min", "prod"]


def soft_score(logprobs: Sequence[TokenLogprob], how: SoftScore = "mean") -> float:
    """Soft self-consistency's score of one sample from its chosen tokens.

    Example:
        >>> lp = [TokenLogprob("a", math.log(0.5)), TokenLogprob("b", math.log(1.0))]
        >>> soft_score(lp, "mean"), soft_score(lp, "min")
        (0.75, 0.5)
    """
    if not logprobs:
        raise ValueError("an empty sample has no score")
    if how == "mean":
        return sum(math.exp(t.logprob) for t in logprobs) / len(logprobs)
    if how == "min":
        return min(math.exp(t.logprob) for t in logprobs)
    if how == "prod":
        return sum(t.logprob for t in logprobs) / len(logprobs)
    raise ValueError(f"unknown soft score {how!r}; use mean, min or prod")


def keep_top_percent(confidences: Sequence[float], percent: float) -> list[bool]:
    """Which traces DeepConf keeps: ``conf >= percentile(confs, 100 - percent)``.

    The percentile interpolates linearly, as numpy's default does.

    Example:
        >>> keep_top_percent([1.0, 2.0, 3.0, 4.0], 50)
        [False, False, True, True]
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    ordered = sorted(confidences)
    rank = (len(ordered) - 1) * (100 - percent) / 100
    low, high = math.floor(rank), math.ceil(rank)
    threshold = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return [c >= threshold for c in confidences]


@dataclass(frozen=True)
class WeightedVote:
    """A confidence-weighted tally: ``weights[a]`` is the summed weight of answer a."""

    winner: str | None
    weights: dict[str, float]
    abstained: int

    @property
    def agreement(self) -> float:
        total = sum(self.weights.values())
        return self.weights[self.winner] / total if self.winner is not None and total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "weights": {a: round(w, 6) for a, w in self.weights.items()},
            "abstained": self.abstained,
            "agreement": round(self.agreement, 4),
        }


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> WeightedVote:
    """``argmax_a sum_i w_i * [answer_i == a]``; ties go to the answer seen first.

    Example:
        >>> weighted_vote(["7", "8", "8"], [3.0, 1.0, 1.5]).winner
        '7'
    """
    if len(answers) != len(weights):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    tally: dict[str, float] = {}
    abstained = 0
    for answer, weight in zip(answers, weights, strict=False):
        if answer is None:
            abstained += 1
        else:
            tally[answer] = tally.get(answer, 0.0) + weight
    winner = max(tally, key=tally.__getitem__) if tally else None  # max keeps the first of equals
    return WeightedVote(winner, tally, abstained)
