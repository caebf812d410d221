"""The eval summary: accuracy with Wilson intervals, cost per item, paired McNemar tests,
and for sampling methods every figure the stored samples give with no new call
(``docs/evaluation.md``): majority@k, the confidence-weighted and DeepConf votes@k,
the oracle's pass@k, and early-stopping rules replayed on the stored order; then the
table printed at the end.

Every derived point costs what drawing its samples costs in the method's own mode
(``concilium.evals._cost``). The rows are summarised in id order, so the same rows give
the same summary (intervals included) whatever order they were written in: that is
what lets ``concilium rescore`` reproduce an eval's summary from its folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from ._cost import SamplingCost, sampling_cost
from ._replay import STOP_RULES, ReplayItem, RuleOutcome, TokensBasis, replay_rules
from ._runner import ItemResult, SampleRecord, sample_records
from ._scorers import (
    ContainsScorer,
    ExactScorer,
    NumericScorer,
    OptionScorer,
    RegexScorer,
    Scorer,
)
from ._server_metrics import render_servers
from ._stats import CurvePoint

__all__ = ["MethodSummary", "summarise", "render_table", "write_summary", "SUMMARY_FILE"]

SUMMARY_FILE = "summary.json"
DEEPCONF_ETAS = (("DeepConf-low", 10.0), ("DeepConf-high", 90.0))
"""The paper's two filters: eta is the percent of the k traces kept, the most confident
ones (DeepConf-low keeps a tenth: aggressive; DeepConf-high nine tenths: conservative)."""
CONFIDENCE_SCORES = ("lowest_group", "bottom_10", "tail", "mean")
"""DeepConf's trace scores a sample turn records (``trace_confidences``); the votes use
one of them, ``lowest_group`` by default (the paper's choice for offline filtering)."""
_SCORE_WORDS = {
    "lowest_group": "its least confident window of 2048 tokens",
    "bottom_10": "the mean of its least confident tenth of 2048-token windows",
    "tail": "its last 2048 tokens",
    "mean": "the mean over all its tokens",
}


class CurveEntry(TypedDict):
    """A point derived from k of the stored samples: its accuracy over items and what
    drawing k costs per item in the method's own mode (``None`` when the method makes
    calls besides its samples; see ``concilium.evals._cost``)."""

    k: int
    accuracy: float
    low: float
    high: float
    tokens_per_item: float | None
    calls_per_item: float | None


class FilteredCurve(TypedDict):
    """DeepConf's filtered vote@k: of the k drawn, the ``eta`` percent most confident
    are kept (``keeps`` says it in words) and voted, weighted by confidence."""

    name: str
    eta: float
    keeps: str
    points: list[CurveEntry]


class ConfidenceVotes(TypedDict):
    """The votes that weigh each sample by a confidence: ``score`` names which one
    (a DeepConf trace score such as ``lowest_group``; ``method``, the confidence the
    method gave; or ``mean_logprob``, weighed as its exp), ``confidence`` says it in
    words; ``unavailable`` says why they were not computed (no made-up confidences:
    then the curves are empty)."""

    score: str | None
    confidence: str | None
    unavailable: str | None
    weighted_at_k: list[CurveEntry]
    deepconf: list[FilteredCurve]


class StopEntry(TypedDict):
    """A stopping rule replayed on each item's stored sample order (the last entry is
    the fixed budget, every sample): samples drawn, the share of items that stopped
    before the budget, accuracy at the stop, and its cost; ``tokens_basis`` says
    whether the completions drawn were counted exactly or as ``k/N`` of the total."""

    rule: str
    parameter: str
    value: float
    samples_per_item: float
    stopped: float
    accuracy: float
    low: float
    high: float
    tokens_per_item: float | None
    calls_per_item: float | None
    tokens_basis: TokensBasis | None


class MethodSummary(TypedDict):
    """One method's row of ``summary.json``."""

    method: str
    scorer: str | None
    items: int
    correct: int
    failed: int
    accuracy: float
    low: float
    high: float
    calls_per_item: float
    prompt_tokens_per_item: float
    completion_tokens_per_item: float
    tokens_per_item: float
    wall_s: float
    vs_first: dict[str, Any] | None
    majority_at_k: list[CurveEntry]
    confidence_votes: ConfidenceVotes | None
    oracle_pass_at_k: list[CurveEntry]
    early_stopping: list[StopEntry]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------ sampling figures


class _Sampled:
    """A sampling method's items: the same N >= 2 stored samples each, their predicates
    and costs (``costs`` is ``None`` unless every item's is known)."""

    def __init__(
        self, rows: Sequence[ItemResult], records: list[list[SampleRecord]], scorer_of: Any
    ) -> None:
        self.records = records
        self.answers = [[s["answer"] for s in recs] for recs in records]
        self.correct: list[Callable[[str], bool]] = [scorer_of(r) for r in rows]
        costs = [sampling_cost(r["transcript"], r["calls"] + r["replayed"]) for r in rows]
        known = [c for c in costs if c is not None]
        self.costs: list[SamplingCost] | None = known if len(known) == len(rows) else None

    @staticmethod
    def of(rows: Sequence[ItemResult], scorer_of: Any) -> _Sampled | None:
        records = [sample_records(r) for r in rows]
        sizes = {len(recs) for recs in records}
        if not rows or len(sizes) != 1 or min(sizes) < 2:
            return None  # not a sampling method, or items drew different N
        return _Sampled(rows, records, scorer_of)

    def entries(self, points: Sequence[CurvePoint]) -> list[CurveEntry]:
        out: list[CurveEntry] = []
        for p in points:
            tokens = calls = None
            if self.costs is not None:  # every item's cost known, or no cost is shown
                drawn = [c.at(p.k) for c in self.costs]
                tokens = _mean([t for t, _ in drawn])
                calls = _mean([float(n) for _, n in drawn])
            out.append({"k": p.k, "accuracy": p.accuracy, "low": p.low, "high": p.high,
                        "tokens_per_item": tokens, "calls_per_item": calls})  # fmt: skip
        return out

    def confidences(self, score: str) -> tuple[list[list[float]] | None, str | None, str]:
        """Each sample's weight, the name of its source and its words; or ``None``,
        ``None`` and why there is none. DeepConf's ``score`` where every sample has
        it, else the method's own confidence, else ``exp(mean_logprob)``."""
        sources: list[tuple[str, list[list[Any]], str]] = [
            (score, [[_score_of(s, score) for s in recs] for recs in self.records],
             f"DeepConf {score} confidence from top-k logprobs ({_SCORE_WORDS[score]})"),
            ("method", [[_number(s["confidence"]) for s in recs] for recs in self.records],
             "the method's trace confidence"),
            ("mean_logprob", [[_exp(s["mean_logprob"]) for s in recs] for recs in self.records],
             "exp(mean_logprob), the geometric mean probability of the sample's tokens "
             "(no top-k logprobs were stored for DeepConf's confidences)"),
        ]  # fmt: skip
        for name, values, words in sources:
            flat = [v for vs in values for v in vs]
            if all(v is None for v in flat):
                continue
            if any(v is None for v in flat):
                have = sum(v is not None for v in flat)
                return None, None, f"{have} of {len(flat)} samples carry a {name} confidence"
            if any(not (v >= 0.0 and math.isfinite(v)) for v in flat):
                return None, None, f"the {name} confidences are not all finite and >= 0"
            return values, name, words
        return (
            None,
            None,
            (
                "no sample carries a confidence: no logprobs were stored (ask the server for "
                "logprobs, with top_logprobs for DeepConf's) and the method scored no trace"
            ),
        )


def _score_of(sample: SampleRecord, score: str) -> float | None:
    """DeepConf's ``score`` of a stored sample, if it has them."""
    scores = sample.get("trace_confidences")
    if scores is None:
        return None
    return _number(scores.get(score)) if isinstance(scores, dict) else math.nan


def _number(value: object) -> float | None:
    """A stored number as a float; anything else but ``None`` as NaN (refused, with the reason)."""
    if value is None:
        return None
    return float(value) if isinstance(value, (int, float)) else math.nan


def _exp(mean_logprob: object) -> float | None:
    """The weight of a mean logprob: a probability, so >= 0 as a weight must be."""
    value = _number(mean_logprob)
    if value is None or not value <= 0.0:  # a positive "logprob" is no logprob: refused
        return value if value is None else math.nan
    return math.exp(value)


def _confidence_votes(sampled: _Sampled, score: str) -> ConfidenceVotes:
    from ._stats import filtered_vote_at_k, weighted_vote_at_k

    weights, source, words = sampled.confidences(score)
    if weights is None:
        return {"score": None, "confidence": None, "unavailable": words,
                "weighted_at_k": [], "deepconf": []}  # fmt: skip
    weighted = weighted_vote_at_k(sampled.answers, weights, sampled.correct)
    deepconf: list[FilteredCurve] = []
    for label, eta in DEEPCONF_ETAS:
        points = filtered_vote_at_k(sampled.answers, weights, sampled.correct, keep_percent=eta)
        deepconf.append({"name": label, "eta": eta, "points": sampled.entries(points),
                         "keeps": f"the {eta:g}% most confident of the k drawn"})  # fmt: skip
    return {"score": source, "confidence": words, "unavailable": None,
            "weighted_at_k": sampled.entries(weighted), "deepconf": deepconf}  # fmt: skip


def _early_stopping(sampled: _Sampled) -> list[StopEntry]:
    costs: Sequence[SamplingCost | None] = sampled.costs or [None] * len(sampled.records)
    items = [
        ReplayItem(answers, is_right, [s["tokens"] for s in recs], cost)
        for answers, is_right, recs, cost in zip(
            sampled.answers, sampled.correct, sampled.records, costs, strict=True
        )
    ]
    return [_stop_entry(o) for o in replay_rules(items, STOP_RULES)]


def _stop_entry(o: RuleOutcome) -> StopEntry:
    return {"rule": o.rule.name, "parameter": o.rule.parameter, "value": o.rule.value,
            "samples_per_item": o.samples, "stopped": o.stopped, "accuracy": o.accuracy,
            "low": o.low, "high": o.high, "tokens_per_item": o.tokens,
            "calls_per_item": o.calls, "tokens_basis": o.tokens_basis}  # fmt: skip


def _sampling_figures(
    rows: Sequence[ItemResult], scorer_of: Any, into: MethodSummary, score: str
) -> None:
    from ._stats import majority_at_k, pass_at_k

    sampled = _Sampled.of(rows, scorer_of) if scorer_of else None
    if sampled is None:
        return
    into["majority_at_k"] = sampled.entries(majority_at_k(sampled.answers, sampled.correct))
    into["confidence_votes"] = _confidence_votes(sampled, score)
    into["oracle_pass_at_k"] = sampled.entries(pass_at_k(sampled.answers, sampled.correct))
    into["early_stopping"] = _early_stopping(sampled)


# -------------------------------------------------------------------- summary


def scorer_label(scorer: Scorer) -> str:
    """A scorer as ``--scorer`` names it (``numeric``, ``regex:PATTERN``); another
    scorer by its class name.

    Example:
        >>> scorer_label(NumericScorer()), scorer_label(RegexScorer("^{gold}$"))
        ('numeric', 'regex:^{gold}$')
    """
    if isinstance(scorer, RegexScorer):
        return f"regex:{scorer.pattern}"
    if isinstance(scorer, NumericScorer) and scorer != NumericScorer():
        return f"numeric(tolerance={scorer.tolerance:g})"
    named = {ExactScorer: "exact", NumericScorer: "numeric", OptionScorer: "option",
             ContainsScorer: "contains"}  # fmt: skip
    return named.get(type(scorer), type(scorer).__name__)


def summarise(
    results: Sequence[ItemResult] | str | os.PathLike[str],
    methods: Sequence[str] | None = None,
    scorer_of: Any = None,
    *,
    scorer: Scorer | None = None,
    confidence_score: str = "lowest_group",
) -> list[MethodSummary]:
    """Per-method summaries, in ``methods`` order, each compared with the first on the
    items both answered (exact McNemar test). ``scorer_of(row)`` gives the predicate on a
    sampled answer for ``row`` (needed for the sampling figures; without it none).

    Given an eval's ``--out`` folder instead of its rows, the summary is recomputed
    from ``results.jsonl`` alone with no model call (what ``concilium rescore`` does):
    methods in the order of the folder's ``summary.json`` unless given, every answer
    and sample scored again with ``scorer`` (default: the one the eval chose by the
    gold answers, checked against the verdicts stored in the rows). Given rows,
    ``scorer`` only names the scorer ``scorer_of`` applies, for ``summary.json``.

    The confidence votes weigh each sample by DeepConf's ``confidence_score``
    (``lowest_group``, ``bottom_10``, ``tail`` or ``mean``) where the samples carry
    it; see :class:`ConfidenceVotes` for the fallbacks.

    Example:
        >>> row = {
        ...     "id": "q1",
        ...     "method": "m",
        ...     "correct": True,
        ...     "failed": False,
        ...     "calls": 1,
        ...     "replayed": 0,
        ...     "prompt_tokens": 9,
        ...     "completion_tokens": 3,
        ...     "wall_s": 0.1,
        ...     "transcript": [],
        ... }
        >>> [(s["method"], s["accuracy"], s["tokens_per_item"]) for s in summarise([row])]
        [('m', 1.0, 12.0)]
    """
    from ._stats import mcnemar_exact, wilson_interval

    if confidence_score not in CONFIDENCE_SCORES:
        raise ValueError(
            f"unknown confidence score {confidence_score!r}; use one of {', '.join(CONFIDENCE_SCORES)}"
        )
    if isinstance(results, (str, os.PathLike)):
        from ._rescore import read_folder

        results, found, scorer_of, scorer = read_folder(Path(results), scorer)
        methods = methods or found
    if methods is None:
        methods = list(dict.fromkeys(r["method"] for r in results))
    # id order: the same rows give the same summary, whatever order they were written in
    ordered = sorted(results, key=lambda r: str(r["id"]))
    by_method = {m: [r for r in ordered if r["method"] == m] for m in methods}
    first = {r["id"]: r["correct"] for r in by_method[methods[0]]} if methods else {}
    out: list[MethodSummary] = []
    for name in methods:
        rows = by_method[name]
        n = len(rows)
        right = sum(r["correct"] for r in rows)
        low, high = wilson_interval(right, n) if n else (0.0, 0.0)
        vs: dict[str, Any] | None = None
        if name != methods[0]:
            pairs = [(first[r["id"]], r["correct"]) for r in rows if r["id"] in first]
            b = sum(1 for f, s in pairs if f and not s)
            c = sum(1 for f, s in pairs if s and not f)
            vs = {"against": methods[0], "items": len(pairs), "b": b, "c": c,
                  "mcnemar_p": mcnemar_exact(b, c)}  # fmt: skip
        prompt = _mean([r["prompt_tokens"] for r in rows])
        completion = _mean([r["completion_tokens"] for r in rows])
        summary: MethodSummary = {
            "method": name,
            "scorer": scorer_label(scorer) if scorer is not None else None,
            "items": n,
            "correct": right,
            "failed": sum(r["failed"] for r in rows),
            "accuracy": right / n if n else 0.0,
            "low": low,
            "high": high,
            "calls_per_item": _mean([r["calls"] + r["replayed"] for r in rows]),
            "prompt_tokens_per_item": prompt,
            "completion_tokens_per_item": completion,
            "tokens_per_item": prompt + completion,
            "wall_s": sum(r["wall_s"] for r in rows),
            "vs_first": vs,
            "majority_at_k": [],
            "confidence_votes": None,
            "oracle_pass_at_k": [],
            "early_stopping": [],
        }
        _sampling_figures(rows, scorer_of, summary, confidence_score)
        out.append(summary)
    return out


# ---------------------------------------------------------------------- table


def render_table(summary: Sequence[MethodSummary], servers: Mapping[str, Any] | None = None) -> str:
    """The summary as a fixed-width text table, then each sampling method's blocks, then
    ``servers`` (``evaluate``'s: where the calls went, the servers' view) when given."""
    head = (
        f"{'method':<32} {'acc':>6} {'95% CI':>15} {'calls':>7} {'tokens':>9} "
        f"{'wall s':>8} {'p vs first':>10}"
    )
    lines = [head, "-" * len(head)]
    for s in summary:
        p = f"{s['vs_first']['mcnemar_p']:.3g}" if s["vs_first"] else "-"
        ci = f"[{s['low']:.3f}, {s['high']:.3f}]"
        lines.append(
            f"{s['method'][:32]:<32} {s['accuracy']:>6.3f} "
            f"{ci:>15} {s['calls_per_item']:>7.2f} "
            f"{s['tokens_per_item']:>9.1f} {s['wall_s']:>8.2f} {p:>10}"
        )
        if s["failed"]:
            lines[-1] += f"  ({s['failed']} failed)"
    for s in summary:
        lines.extend(_sampling_blocks(s))
    if servers is not None:
        lines += ["", render_servers(servers)]
    return "\n".join(lines)


def _sampling_blocks(s: MethodSummary) -> list[str]:
    if not s["majority_at_k"]:
        return []
    name = s["method"]
    lines = ["", f"majority@k for {name}:", *map(_curve_line, s["majority_at_k"])]
    votes = s.get("confidence_votes")
    if votes is not None and votes["unavailable"]:
        lines += ["", f"confidence votes for {name}: unavailable ({votes['unavailable']})"]
    elif votes is not None:
        lines += ["", f"confidence-weighted vote@k for {name} (weights: {votes['confidence']}):"]
        lines += map(_curve_line, votes["weighted_at_k"])
        for f in votes["deepconf"]:
            lines += ["", f"{f['name']}@k for {name} (eta={f['eta']:g}: keeps {f['keeps']}, "
                          f"by {votes['score']}):"]  # fmt: skip
            lines += map(_curve_line, f["points"])
    if s.get("oracle_pass_at_k"):
        lines += ["", f"pass@k for {name} (oracle: right if any of the k is; a bound, not a method):"]  # fmt: skip
        lines += map(_curve_line, s["oracle_pass_at_k"])
    if s.get("early_stopping"):
        lines += ["", f"early stopping for {name} (rules replayed on the stored sample order):"]
        lines.append(f"  {'rule':<24} {'samples':>7} {'stopped':>7} {'acc':>6} {'95% CI':>15}"
                     f" {'tokens':>9} {'':<8} {'calls':>6}")  # fmt: skip
        lines += map(_stop_line, s["early_stopping"])
    return lines


def _curve_line(c: CurveEntry) -> str:
    line = f"  k={c['k']:<4} {c['accuracy']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"
    if c["tokens_per_item"] is None or c["calls_per_item"] is None:
        return line + "  (cost n/a: the method calls more than its samples)"
    return line + f"  {c['tokens_per_item']:>9.1f} tokens {c['calls_per_item']:>6.2f} calls"


def _stop_line(e: StopEntry) -> str:
    label = f"{e['rule']}({e['parameter']}={e['value']:g})"
    ci = f"[{e['low']:.3f}, {e['high']:.3f}]"
    line = (f"  {label:<24} {e['samples_per_item']:>7.2f} {e['stopped']:>7.0%} "
            f"{e['accuracy']:>6.3f} {ci:>15}")  # fmt: skip
    if e["tokens_per_item"] is None or e["calls_per_item"] is None:
        return line + "  (cost n/a: the method calls more than its samples)"
    return line + f" {e['tokens_per_item']:>9.1f} {e['tokens_basis'] or '':<8} {e['calls_per_item']:>6.2f}"  # fmt: skip


def write_summary(
    summary: Sequence[MethodSummary], out_dir: Path, servers: Mapping[str, Any] | None = None
) -> tuple[Path, list[Path]]:
    """Write ``summary.json`` and the accuracy-vs-tokens plot; return their paths.

    ``servers`` (``ServerWatch.view``: where this invocation's calls went, in the
    servers' own counters) goes under its own key."""
    import json

    path = out_dir / SUMMARY_FILE
    written: dict[str, Any] = {"methods": list(summary)}
    if servers is not None:
        written["servers"] = dict(servers)
    path.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    plots: list[Path] = []
    try:
        from ._plot import MethodPoint, plot_accuracy_vs_tokens
    except ImportError:
        return path, plots
    points = [
        MethodPoint(s["method"], s["tokens_per_item"], s["accuracy"], s["low"], s["high"])
        for s in summary
        if s["tokens_per_item"] > 0  # every item failed: nothing to place on a log axis
    ]
    for s in summary:
        for c in s["majority_at_k"]:  # each point at what drawing k costs (the cost model)
            tokens = c["tokens_per_item"]
            if tokens is None or tokens <= 0:
                continue
            name = f"{s['method']} k={c['k']}"
            points.append(
                MethodPoint(name, tokens, c["accuracy"], c["low"], c["high"], curve=s["method"])
            )
        for e in s["early_stopping"]:  # where each rule stopped; "fixed" is majority@N
            tokens = e["tokens_per_item"]
            if e["rule"] == "fixed" or tokens is None or tokens <= 0:
                continue
            points.append(MethodPoint(f"{s['method']} {e['rule']}", tokens, e["accuracy"],
                                      e["low"], e["high"], curve=s["method"], stop=e["rule"]))  # fmt: skip
    if not points:
        return path, plots
    png, svg = plot_accuracy_vs_tokens(points, out_dir)
    plots += [png, svg]
    return path, plots
