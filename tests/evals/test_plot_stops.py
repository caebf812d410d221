"""Early-stopping points on the accuracy-against-tokens plot: hollow markers in their
method's colour, one legend entry per method, each labelled by its rule where there is
room, and still no two texts overlapping; ``write_summary`` puts them there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Annotation, Text

from concilium.evals import write_summary
from concilium.evals._plot import MethodPoint, draw_accuracy_vs_tokens, pareto_frontier

RULES = ("beta", "majority", "entropy", "esc")


def _crowded() -> list[MethodPoint]:
    """Two methods with majority@k curves (k = 1..9), four stops each, and a debate."""
    points = [MethodPoint("debate rounds=2", 480.0, 0.86, 0.76, 0.96)]
    for curve, per_sample, base in (("self_consistency", 11.0, 0.79), ("sample", 12.0, 0.80)):
        for k in range(1, 10):
            acc = base + 0.01 * k
            points.append(
                MethodPoint(
                    f"{curve} k={k}", 78 + per_sample * k, acc, acc - 0.1, acc + 0.1, curve=curve
                )
            )
        for i, rule in enumerate(RULES):
            acc = base + 0.07 + 0.005 * i
            tokens = 78 + per_sample * (3.5 + i)
            points.append(
                MethodPoint(
                    f"{curve} {rule}", tokens, acc, acc - 0.1, acc + 0.1, curve=curve, stop=rule
                )
            )
    return points


def _texts(fig: Figure) -> list[tuple[Text, Any]]:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (ax,) = fig.axes
    shown = [t for t in [*ax.texts, *fig.legends[0].get_texts()] if t.get_text().strip()]
    return [(t, Text.get_window_extent(t, renderer)) for t in shown]


def test_stops_are_hollow_in_their_methods_colour_labelled_by_rule_without_overlap() -> None:
    points = _crowded()
    fig = draw_accuracy_vs_tokens(points)
    (ax,) = fig.axes
    (legend,) = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert "self_consistency early stops" in entries and "sample early stops" in entries
    stops = {
        str(line.get_label()): line for line in ax.lines if "early stops" in str(line.get_label())
    }
    curves = {str(line.get_label()): line for line in ax.lines if "majority@k" in str(line.get_label())}  # fmt: skip
    for method in ("self_consistency", "sample"):
        dots: Line2D = stops[f"{method} early stops"]
        curve = curves[f"{method} majority@k, k=1 to 9"]
        assert dots.get_markerfacecolor() == "white"  # hollow
        assert dots.get_markeredgecolor() == curve.get_color()  # its method's colour
        assert dots.get_linestyle() == "None" and len(dots.get_xdata()) == 4  # pyright: ignore[reportArgumentType]
    labels = {a.get_text() for a in ax.texts if isinstance(a, Annotation)}
    assert labels & set(RULES)  # stops carry their rule's name where there is room
    frontier = {(p.tokens_per_item, p.accuracy) for p in pareto_frontier(points)}
    labelled = {a.xy for a in ax.texts if isinstance(a, Annotation)}
    assert frontier <= labelled  # the frontier keeps its labels first
    boxes = _texts(fig)
    clashes = [
        (a.get_text(), b.get_text())
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]
    assert not clashes, clashes


def _entry(rule: str, samples: float, accuracy: float, tokens: float | None) -> dict[str, Any]:
    return {"rule": rule, "parameter": "threshold", "value": 0.95, "samples_per_item": samples,
            "stopped": 0.5, "accuracy": accuracy, "low": accuracy - 0.1, "high": accuracy + 0.1,
            "tokens_per_item": tokens, "calls_per_item": 1.0, "tokens_basis": "exact"}  # fmt: skip


def test_write_summary_draws_each_rules_stop_but_not_the_fixed_budget(tmp_path: Path) -> None:
    curve = [{"k": k, "accuracy": 0.5 + 0.05 * k, "low": 0.4, "high": 0.9,
              "tokens_per_item": 100.0 + 20 * k, "calls_per_item": 1.0} for k in (1, 2, 3)]  # fmt: skip
    summary: Any = [
        {"method": "sc", "scorer": "numeric", "items": 4, "correct": 3, "failed": 0,
         "accuracy": 0.75, "low": 0.3, "high": 0.95, "calls_per_item": 1.0,
         "prompt_tokens_per_item": 100.0, "completion_tokens_per_item": 60.0,
         "tokens_per_item": 160.0, "wall_s": 1.0, "vs_first": None, "majority_at_k": curve,
         "confidence_votes": None, "oracle_pass_at_k": [],
         "early_stopping": [_entry("beta", 2.0, 0.7, 140.0), _entry("esc", 3.0, 0.65, 160.0),
                            _entry("fixed", 3.0, 0.65, 160.0)]},
    ]  # fmt: skip
    _, plots = write_summary(summary, tmp_path)
    svg = next(p for p in plots if p.suffix == ".svg").read_text()
    assert "sc early stops" in svg and "sc majority@k, k=1 to 3" in svg
    assert ">beta<" in svg or "beta</text>" in svg  # the frontier's stop is labelled
    assert "fixed" not in svg  # the budget is majority@N, already on the curve
