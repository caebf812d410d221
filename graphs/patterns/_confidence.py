"""Confidence of a sampled trace from its token logprobs, and confidence-weighted votes.

Two families (``docs/methods.md#confidence-consistency``):

* DeepConf (Fu et al., 2025): token confidence ``C_t = -mean(top-k logprobs at t)``
  (the top-k candidates, not the chosen token; higher means more peaked), group
  confidence = mean of ``C`` over a sliding window (stride 1), and trace scores
  ``mean``, ``lowest_group``, ``bottom_10`` (mean of the lowest 10% of windows) and
  ``tail`` (mean of the last ``window`` tokens).
* Soft self-consistency (Wang et al., 2024): the chosen tokens' probabilities,
  ``mean`` (of probabilities, not logprobs), ``min`` or ``prod`` (mean logprob).

Example:
    >>> from concilium.agents import TokenLogprob
    >>> peaked = [TokenLogprob("a", -0.01, (("a", -0.01), ("b", -5.0)))]
    >>> round(trace_confidence(peaked, "mean"), 3)
    2.505
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from concilium.agents import TokenLogprob

TraceScore = Literal["mean", "lowest_group", "bottom_10", "tail"]
SoftScore = Literal["mean", "min", "prod"]
DEEPCONF_WINDOW = 2048  # the reference window (tokens)
DEEPCONF_TOP_K = 20  # the reference asks the server for logprobs=20


def token_confidences(logprobs: Sequence[TokenLogprob]) -> list[float]:
    """``C_t = -(1/k) * sum of the top-k logprobs`` at each position.

    Raises:
        ValueError: when a position has no top-k list (ask for ``top_logprobs``).
    """
    out = []
    for i, token in enumerate(logprobs):
        if not token.top:
            raise ValueError(
                f"token {i} ({token.token!r}) has no top logprobs; DeepConf needs the top-k "
                f"candidates: request logprobs=True, top_logprobs={DEEPCONF_TOP_K}"
            )
        out.append(-sum(lp for _, lp in token.top) / len(token.top))
    return out


def group_confidences(confidences: Sequence[float], window: int = DEEPCONF_WINDOW) -> list[float]:
    """Means over every window of ``window`` tokens (stride 1); one mean if shorter.

    Example:
        >>> group_confidences([1.0, 2.0, 3.0, 4.0], window=2)
        [1.5, 2.5, 3.5]
    """
    if not confidences:
        raise ValueError("an empty trace has no confidence")
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)]
    prefix = [0.0]
    for c in confidences:
        prefix.append(prefix[-1] + c)
    return [(prefix[i + window] - prefix[i]) / window for i in range(len(confidences) - window + 1)]


def trace_confidence(
    logprobs: Sequence[TokenLogprob],
    score: TraceScore = "lowest_group",
    window: int = DEEPCONF_WINDOW,
) -> float:
    """One DeepConf score for a whole trace (higher is more confident)."""
    cs = token_confidences(logprobs)
    if score == "mean":
        return sum(cs) / len(cs)
    if score == "tail":
        tail = cs[-window:]
        return sum(tail) / len(tail)
    groups = group_confidences(cs, window)
    if score == "lowest_group":
        return min(groups)
    if score == "bottom_10":
        lowest = sorted(groups)[: max(1, math.ceil(len(groups) * 0.1))]
        return sum(lowest) / len(lowest)
    raise ValueError(f"unknown trace score {score!r}; use mean, lowest_group, bottom_10 or tail")


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
