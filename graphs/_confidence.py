"""How confident a sampled trace was, from its token logprobs (DeepConf, Fu et al., 2025).

* token confidence ``C_i = -(1/k) * sum of the top-k logprobs at position i`` (the
  top-k candidates, not the chosen token; higher means more peaked);
* group confidence: the mean of ``C`` over a sliding window of ``window`` tokens
  (stride 1; a trace no longer than the window is one group, its mean);
* the trace's scores: ``mean`` (of every ``C_i``), ``lowest_group`` (the least
  confident window), ``bottom_10`` (the mean of the lowest 10% of windows, at least
  one) and ``tail`` (the mean of the last ``window`` tokens).

``WindowConfidence`` follows the same group confidence while a trace streams, in
O(1) a token (DeepConf online aborts a trace the moment it falls below a threshold).

The kit records all four on each sample turn that carries top-k logprobs
(``sample_turns``), so an analysis of stored samples can weigh or filter them later;
``confidence_consistency`` scores its traces with the same function. How the scores
are used (a weighted vote, keeping the top percent) is the patterns' business.

Example:
    >>> from concilium.agents import TokenLogprob
    >>> peaked = [TokenLogprob("a", -0.01, (("a", -0.01), ("b", -5.0)))]
    >>> {s: round(c, 3) for s, c in trace_confidences(peaked).items()}
    {'mean': 2.505, 'lowest_group': 2.505, 'bottom_10': 2.505, 'tail': 2.505}
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Literal

from concilium.agents import TokenLogprob

TraceScore = Literal["mean", "lowest_group", "bottom_10", "tail"]
TRACE_SCORES: tuple[TraceScore, ...] = ("mean", "lowest_group", "bottom_10", "tail")
DEEPCONF_WINDOW = 2048  # the reference window (tokens)
DEEPCONF_TOP_K = 20  # the reference asks the server for logprobs=20


def token_confidences(logprobs: Sequence[TokenLogprob]) -> list[float]:
    """``C_i = -(1/k) * sum of the top-k logprobs`` at each position.

    Raises:
        ValueError: when a position has no top-k list (ask for ``top_logprobs``).
    """
    out: list[float] = []
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
    if window < 1:
        raise ValueError(f"a DeepConf window is at least 1 token, got {window}")
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)]
    prefix = [0.0]
    for c in confidences:
        prefix.append(prefix[-1] + c)
    return [(prefix[i + window] - prefix[i]) / window for i in range(len(confidences) - window + 1)]


def trace_confidences(
    logprobs: Sequence[TokenLogprob], window: int = DEEPCONF_WINDOW
) -> dict[str, float]:
    """Every DeepConf score of a trace (higher is more confident), keyed by
    ``TRACE_SCORES``; its token confidences and windows are computed once.

    Raises:
        ValueError: for an empty trace, or a token without top logprobs.

    Example:
        >>> from concilium.agents import TokenLogprob
        >>> trace = [TokenLogprob("t", -1.0, (("t", -c),)) for c in (4, 4, 1, 1, 4, 4)]
        >>> trace_confidences(trace, window=2)
        {'mean': 3.0, 'lowest_group': 1.0, 'bottom_10': 1.0, 'tail': 4.0}
    """
    cs = token_confidences(logprobs)
    groups = group_confidences(cs, window)
    lowest = sorted(groups)[: max(1, math.ceil(len(groups) * 0.1))]
    tail = cs[-window:]
    return {
        "mean": sum(cs) / len(cs),
        "lowest_group": lowest[0],
        "bottom_10": sum(lowest) / len(lowest),
        "tail": sum(tail) / len(tail),
    }


def has_top_logprobs(logprobs: Sequence[TokenLogprob] | None) -> bool:
    """Whether DeepConf's scores can be computed: a trace whose every token has its top-k."""
    return bool(logprobs) and all(t.top for t in logprobs or ())


def token_confidence(top: Sequence[tuple[str, float]]) -> float:
    """One position's ``C_i`` from its top-k ``(token, logprob)`` pairs.

    Raises:
        ValueError: when ``top`` is empty (ask for ``top_logprobs``).
    """
    if not top:
        raise ValueError(
            f"a token has no top logprobs; DeepConf needs the top-k candidates: request "
            f"logprobs=True, top_logprobs={DEEPCONF_TOP_K}"
        )
    return -sum(lp for _, lp in top) / len(top)


class WindowConfidence:
    """DeepConf's group confidence of a trace while it streams, O(1) a token.

    ``add`` takes each token's top-k and returns the mean ``C`` of the last
    ``window`` tokens (of all so far while fewer); ``full`` says a whole window has
    been seen (DeepConf online compares with its threshold only then); ``lowest`` is
    the trace's ``lowest_group`` as ``trace_confidences`` computes it for the tokens
    so far. ``curve`` keeps the group confidence after each token.

    Example:
        >>> w = WindowConfidence(window=2)
        >>> [w.add([("t", -c)]) for c in (4, 4, 1, 1, 4)]
        [4.0, 4.0, 2.5, 1.0, 2.5]
        >>> w.full, w.lowest, w.tokens
        (True, 1.0, 5)
    """

    __slots__ = ("_last", "_lowest", "_sum", "curve", "tokens", "window")

    def __init__(self, window: int = DEEPCONF_WINDOW):
        if window < 1:
            raise ValueError(f"a DeepConf window is at least 1 token, got {window}")
        self.window = window
        self.tokens = 0
        self.curve: list[float] = []
        self._last: deque[float] = deque()
        self._sum = 0.0
        self._lowest = math.inf

    def add(self, top: Sequence[tuple[str, float]]) -> float:
        """Take one token's top-k; the group confidence now."""
        c = token_confidence(top)
        self.tokens += 1
        self._last.append(c)
        self._sum += c
        if len(self._last) > self.window:
            self._sum -= self._last.popleft()
        group = self._sum / len(self._last)
        if self.full:
            self._lowest = min(self._lowest, group)
        self.curve.append(group)
        return group

    @property
    def full(self) -> bool:
        return self.tokens >= self.window

    @property
    def group(self) -> float:
        """The group confidence now (``nan`` before the first token)."""
        return self.curve[-1] if self.curve else math.nan

    @property
    def lowest(self) -> float:
        """The least confident whole window; while none is whole, the mean so far."""
        return self._lowest if self.full else self.group


def deepconf_threshold(lowest_groups: Sequence[float], keep_percent: float) -> float:
    """DeepConf online's stopping threshold: the ``100 - keep_percent`` percentile of
    the warm-up traces' lowest-group confidences (linear interpolation, numpy's
    default), so ``keep_percent`` 10 sets it at the 90th percentile (aggressive: a
    trace must be as confident as the top 10% of the warm-up) and 90 at the 10th
    (conservative).

    Example:
        >>> (
        ...     deepconf_threshold([1.0, 2.0, 3.0, 4.0, 5.0], 10),
        ...     deepconf_threshold([1.0, 2.0, 3.0, 4.0, 5.0], 90),
        ... )
        (4.6, 1.4)
    """
    if not lowest_groups:
        raise ValueError("DeepConf's threshold needs at least one warm-up trace")
    if not 0 < keep_percent <= 100:
        raise ValueError(f"keep_percent must be in (0, 100], got {keep_percent}")
    ordered = sorted(lowest_groups)
    rank = (len(ordered) - 1) * (100 - keep_percent) / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
