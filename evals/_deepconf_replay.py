# pyright: strict
"""DeepConf online, replayed on stored samples: pick ``keep`` (eta) and ``consensus``
(tau) on recorded traces before spending tokens (``docs/evaluation.md#deepconf-online-replayed``).

An eval of a sampling method whose samples carry top-k logprobs stores each sample's
token confidences (``token_confidences`` on its turn, rounded to 3 decimals). Replayed
as ``deepconf_online`` would have drawn them, one at a time in their stored order:

1. the first ``warmup`` samples are drawn whole; the threshold is the ``100 - keep``
   percentile of their lowest-group confidences (``deepconf_threshold``: ``top10`` at
   the 90th, ``top90`` at the 10th);
2. each later sample streams: at its first token where a whole window of ``window``
   tokens has a group confidence below the threshold it is cut, and only the tokens up
   to there count as generated (the pattern's own ``WindowConfidence`` decides it); a
   sample never cut is finished;
3. the finished samples whose lowest group reaches the threshold vote, weighted by it;
   once the leading answer's share of that weight reaches ``consensus`` no further
   sample is drawn, else all ``budget`` are;
4. the answer is the weighted vote's winner (a tie goes to the answer seen first).

The replay is of one trace in flight at a time: ``deepconf_online`` with ``parallel``
p > 1 also spends the partial tokens of up to p - 1 traces in flight when consensus
is reached, which stored samples cannot say. Generated tokens are completion tokens;
``stored`` is what drawing all the stored samples cost (the offline method's), and
``saved`` the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from concilium._errors import UserError
from concilium.graphs.kit import DEEPCONF_WINDOW, WindowConfidence, deepconf_threshold

from ._rescore import read_folder
from ._runner import ItemResult, sample_records
from ._scorers import Scorer
from ._stats import wilson_interval

__all__ = [
    "KEEPS",
    "StoredTrace",
    "ItemReplay",
    "ReplaySetting",
    "DeepConfReplay",
    "replay_item",
    "replay_deepconf",
    "render_replay",
]

KEEPS: dict[str, float] = {"top10": 10.0, "top90": 90.0}  # deepconf_online's keep: values
Keep = Literal["top10", "top90"]


@dataclass(frozen=True)
class StoredTrace:
    """One stored sample: its answer and its token confidences (one per token)."""

    answer: str | None
    confidences: Sequence[float]


@dataclass(frozen=True)
class ItemReplay:
    """One item replayed: the answer, what was generated and why sampling stopped."""

    answer: str | None
    threshold: float
    traces: int  # samples drawn, warm-up included
    aborted: int  # drawn samples cut below the threshold
    generated: int  # completion tokens drawn (a cut sample's up to its cut)
    stored: int  # completion tokens of every stored sample
    stopped_by: Literal["consensus", "budget"]


def _lowest(confidences: Sequence[float], window: int) -> WindowConfidence:
    tracker = WindowConfidence(window)
    for c in confidences:
        tracker.add(((" ", -c),))  # a one-candidate top-k whose confidence is c
    return tracker


def _cut(confidences: Sequence[float], window: int, threshold: float) -> int | None:
    """Tokens generated before the online rule cuts the trace, or ``None`` if never."""
    tracker = WindowConfidence(window)
    for c in confidences:
        tracker.add(((" ", -c),))
        if tracker.full and tracker.group < threshold:
            return tracker.tokens
    return None


def replay_item(
    traces: Sequence[StoredTrace],
    *,
    warmup: int,
    budget: int,
    keep: Keep,
    consensus: float,
    window: int = DEEPCONF_WINDOW,
) -> ItemReplay:
    """``deepconf_online``'s rule replayed on one item's stored samples, in order.

    Example:
        >>> warm = [
        ...     StoredTrace("7", [3.0, 3.0]),
        ...     StoredTrace("8", [2.5, 2.5]),
        ...     StoredTrace("8", [1.0, 1.0]),
        ... ]  # lowest groups 3, 2.5, 1: threshold 1.3
        >>> later = [StoredTrace("8", [3.0, 0.5, 0.5]), StoredTrace("7", [3.0, 3.0])]
        >>> r = replay_item(
        ...     warm + later, warmup=3, budget=5, keep="top90", consensus=0.95, window=2
        ... )  # the third token's window (0.5) is below: cut there
        >>> round(r.threshold, 3), r.answer, r.traces, r.aborted, r.generated, r.stopped_by
        (1.3, '7', 5, 1, 11, 'budget')
    """
    if not 1 <= warmup <= budget <= len(traces):
        raise ValueError(
            f"need 1 <= warmup <= budget <= stored samples, got warmup={warmup}, "
            f"budget={budget}, {len(traces)} samples"
        )
    warm = [(t.answer, _lowest(t.confidences, window).lowest) for t in traces[:warmup]]
    threshold = deepconf_threshold([c for _, c in warm], KEEPS[keep])
    voters = [(a, c) for a, c in warm if c >= threshold]
    generated = sum(len(t.confidences) for t in traces[:warmup])
    drawn, aborted = warmup, 0
    settled = _tally(voters)[1] >= consensus
    for trace in traces[warmup:budget]:
        if settled:
            break
        drawn += 1
        cut = _cut(trace.confidences, window, threshold)
        if cut is not None:
            aborted += 1
            generated += cut
            continue
        generated += len(trace.confidences)
        lowest = _lowest(trace.confidences, window).lowest  # below only when shorter than a window
        if lowest >= threshold:
            voters.append((trace.answer, lowest))
        settled = _tally(voters)[1] >= consensus
    return ItemReplay(
        answer=_tally(voters)[0], threshold=threshold, traces=drawn, aborted=aborted,
        generated=generated, stored=sum(len(t.confidences) for t in traces),
        stopped_by="consensus" if settled else "budget",
    )  # fmt: skip


def _tally(voters: Sequence[tuple[str | None, float]]) -> tuple[str | None, float]:
    """The weighted vote's winner (the first seen of equals) and its share of the weight."""
    weights: dict[str, float] = {}
    for answer, weight in voters:
        if answer is not None:
            weights[answer] = weights.get(answer, 0.0) + weight
    if not weights:
        return None, 0.0
    winner = max(weights, key=weights.__getitem__)
    total = sum(weights.values())
    return winner, (weights[winner] / total if total else 0.0)


@dataclass(frozen=True)
class ReplaySetting:
    """One (method, keep, consensus) over every item: accuracy (95% Wilson interval)
    and tokens per item, generated online against all stored samples'."""

    method: str
    keep: str
    consensus: float
    items: int
    accuracy: float
    low: float
    high: float
    generated_per_item: float
    stored_per_item: float
    saved: float  # the share of the stored tokens not generated
    traces_per_item: float
    aborted_per_item: float
    consensus_stops: float  # the share of items stopped by consensus


@dataclass
class DeepConfReplay:
    """Every setting replayed, and the methods that could not be (with why)."""

    warmup: int
    budget: int | None
    window: int
    settings: list[ReplaySetting] = field(default_factory=list[ReplaySetting])
    skipped: dict[str, str] = field(default_factory=dict[str, str])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _traces(row: ItemResult) -> list[StoredTrace] | None:
    records = sample_records(row)
    confs = [r.get("token_confidences") for r in records]
    if not records or any(not c for c in confs):
        return None
    return [StoredTrace(r["answer"], c or ()) for r, c in zip(records, confs, strict=True)]


def replay_deepconf(
    out: Path,
    keeps: Sequence[str] = ("top10", "top90"),
    consensuses: Sequence[float] = (0.95,),
    *,
    warmup: int = 16,
    budget: int | None = None,
    window: int = DEEPCONF_WINDOW,
    method: str | None = None,
    scorer: Scorer | None = None,
) -> DeepConfReplay:
    """Replay DeepConf online on the eval in ``out`` (its ``--out`` folder), for every
    ``keep`` x ``consensus``, over each method whose samples carry token confidences
    (or only ``method``). ``budget`` defaults to all stored samples.

    Raises:
        UserError: a bad setting, an unknown or unusable ``method``, or no method to replay.
    """
    bad = [k for k in keeps if k not in KEEPS]
    if bad or not keeps:
        raise UserError(
            f"keep {bad or keeps} is not top10 or top90 (deepconf_online's keep: values)"
        )
    if not consensuses or any(not 0 < c <= 1 or math.isnan(c) for c in consensuses):
        raise UserError(f"consensus (tau) values must be in (0, 1], got {list(consensuses)}")
    if warmup < 1 or window < 1 or (budget is not None and budget < warmup):
        raise UserError(
            f"need warmup >= 1, window >= 1 and budget >= warmup; got warmup={warmup}, "
            f"window={window}, budget={budget}"
        )
    rows, methods, predicate_of, _ = read_folder(out, scorer)
    if method is not None and method not in methods:
        raise UserError(f"the eval in {out} has no method {method!r}; it has {methods}")
    report = DeepConfReplay(warmup=warmup, budget=budget, window=window)
    for name in [method] if method is not None else methods:
        ours = [r for r in rows if r["method"] == name]
        why = _usable(name, ours, warmup, budget, report)
        if why is not None:
            report.skipped[name] = why
            continue
        items = [(t, predicate_of(r)) for r in ours if not r["failed"] and (t := _traces(r))]
        for keep in keeps:
            for tau in consensuses:
                report.settings.append(_setting(name, items, keep, tau, warmup, budget, window))  # type: ignore[arg-type]
    if method is not None and method in report.skipped:
        raise UserError(f"{method}: {report.skipped[method]}")
    if not report.settings:
        reasons = "; ".join(f"{m}: {w}" for m, w in report.skipped.items())
        raise UserError(f"no method of the eval in {out} can be replayed ({reasons})")
    return report


def _usable(
    name: str, rows: Sequence[ItemResult], warmup: int, budget: int | None, report: DeepConfReplay
) -> str | None:
    """Why ``name``'s rows cannot be replayed, or ``None``."""
    done = [r for r in rows if not r["failed"]]
    if not done:
        return "every item failed"
    traces = [_traces(r) for r in done]
    if any(t is None for t in traces):
        return ("its samples carry no token confidences (sample with top-k logprobs: "
                "logprobs: true, top_logprobs: 5 or more; rows from before they were recorded have none)")  # fmt: skip
    least = min(len(t or ()) for t in traces)
    if least < max(warmup, budget or 0):
        return f"an item has {least} samples, fewer than the warmup/budget ({max(warmup, budget or 0)})"
    if len(done) < len(rows):
        report.skipped[f"{name} (failed items)"] = f"{len(rows) - len(done)} failed items left out"
    return None


def _setting(
    name: str,
    items: Sequence[tuple[list[StoredTrace], Callable[[str], bool]]],
    keep: Keep,
    tau: float,
    warmup: int,
    budget: int | None,
    window: int,
) -> ReplaySetting:
    replays = [
        replay_item(
            t, warmup=warmup, budget=budget or len(t), keep=keep, consensus=tau, window=window
        )
        for t, _ in items
    ]
    right = sum(
        r.answer is not None and ok(r.answer) for r, (_, ok) in zip(replays, items, strict=True)
    )
    n = len(replays)
    low, high = wilson_interval(right, n)
    stored = sum(r.stored for r in replays)
    generated = sum(r.generated for r in replays)
    return ReplaySetting(
        method=name, keep=keep, consensus=tau, items=n, accuracy=right / n, low=low, high=high,
        generated_per_item=generated / n, stored_per_item=stored / n,
        saved=1 - generated / stored if stored else 0.0,
        traces_per_item=sum(r.traces for r in replays) / n,
        aborted_per_item=sum(r.aborted for r in replays) / n,
        consensus_stops=sum(r.stopped_by == "consensus" for r in replays) / n,
    )  # fmt: skip


def render_replay(report: DeepConfReplay) -> str:
    """The replay as a Markdown table, then the methods left out and why."""
    head = (f"DeepConf online replayed (warmup {report.warmup}, budget "
            f"{report.budget or 'all stored'}, window {report.window}, one trace at a time)")  # fmt: skip
    lines = [
        head, "",
        "| method | keep | consensus | items | accuracy (95% CI) | generated tokens/item | "
        "stored tokens/item | saved | traces/item | aborted/item | consensus stops |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for s in report.settings:
        lines.append(
            f"| {s.method} | {s.keep} | {s.consensus:g} | {s.items} | {s.accuracy:.3f} "
            f"({s.low:.2f}-{s.high:.2f}) | {s.generated_per_item:,.1f} | {s.stored_per_item:,.1f} "
            f"| {s.saved:.1%} | {s.traces_per_item:.2f} | {s.aborted_per_item:.2f} "
            f"| {s.consensus_stops:.0%} |"
        )
    for name, why in report.skipped.items():
        lines.append(f"\nnot replayed: {name}: {why}")
    return "\n".join(lines)
