"""The eval summary: accuracy with Wilson intervals, cost per item, paired McNemar tests,
majority@k curves for sampling methods, and the table printed at the end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from ._cost import sampling_cost
from ._runner import ItemResult

__all__ = ["MethodSummary", "summarise", "render_table", "write_summary", "SUMMARY_FILE"]

SUMMARY_FILE = "summary.json"


class CurveEntry(TypedDict):
    """A majority@k point: its accuracy over items and what drawing k costs per item in
    the method's own mode (``None`` when the method makes calls besides its samples;
    see ``concilium.evals._cost``)."""

    k: int
    accuracy: float
    low: float
    high: float
    tokens_per_item: float | None
    calls_per_item: float | None


class MethodSummary(TypedDict):
    """One method's row of ``summary.json``."""

    method: str
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _curve(rows: Sequence[ItemResult], scorer_of: Any) -> list[CurveEntry]:
    from ._stats import majority_at_k

    sizes = {len(r["samples"]) for r in rows}
    if len(sizes) != 1 or min(sizes) < 2:
        return []  # not a sampling method, or items drew different N
    samples = [r["samples"] for r in rows]
    correct = [scorer_of(r) for r in rows]
    points = majority_at_k(samples, correct)
    costs = [sampling_cost(r["transcript"], r["calls"] + r["replayed"]) for r in rows]
    known = [c for c in costs if c is not None]
    out: list[CurveEntry] = []
    for p in points:
        tokens = calls = None
        if len(known) == len(rows):  # every item's cost known, or no cost is shown
            drawn = [c.at(p.k) for c in known]
            tokens = _mean([t for t, _ in drawn])
            calls = _mean([float(n) for _, n in drawn])
        out.append({"k": p.k, "accuracy": p.accuracy, "low": p.low, "high": p.high,
                    "tokens_per_item": tokens, "calls_per_item": calls})  # fmt: skip
    return out


def summarise(
    results: Sequence[ItemResult], methods: Sequence[str], scorer_of: Any = None
) -> list[MethodSummary]:
    """Per-method summaries, in ``methods`` order, each compared with the first on the
    items both answered (exact McNemar test). ``scorer_of(row)`` gives the predicate on a
    sampled answer for ``row`` (needed for majority@k; without it no curves)."""
    from ._stats import mcnemar_exact, wilson_interval

    by_method = {m: [r for r in results if r["method"] == m] for m in methods}
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
        out.append(
            {
                "method": name,
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
                "majority_at_k": _curve(rows, scorer_of) if scorer_of else [],
            }
        )
    return out


def render_table(summary: Sequence[MethodSummary]) -> str:
    """The summary as a fixed-width text table, then majority@k blocks."""
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
        if s["majority_at_k"]:
            lines.append("")
            lines.append(f"majority@k for {s['method']}:")
            lines.extend(_curve_line(c) for c in s["majority_at_k"])
    return "\n".join(lines)


def _curve_line(c: CurveEntry) -> str:
    line = f"  k={c['k']:<4} {c['accuracy']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"
    if c["tokens_per_item"] is None or c["calls_per_item"] is None:
        return line + "  (cost n/a: the method calls more than its samples)"
    return line + f"  {c['tokens_per_item']:>9.1f} tokens {c['calls_per_item']:>6.2f} calls"


def write_summary(summary: Sequence[MethodSummary], out_dir: Path) -> tuple[Path, list[Path]]:
    """Write ``summary.json`` and the accuracy-vs-tokens plot; return their paths."""
    path = out_dir / SUMMARY_FILE
    path.write_text(json.dumps({"methods": list(summary)}, indent=2) + "\n", encoding="utf-8")
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
    if not points:
        return path, plots
    png, svg = plot_accuracy_vs_tokens(points, out_dir)
    plots += [png, svg]
    return path, plots
