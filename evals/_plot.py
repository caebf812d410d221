"""The evaluation's picture: accuracy against tokens per item, Pareto frontier marked.

matplotlib is imported inside :func:`plot_accuracy_vs_tokens` only, with the Agg
backend (no display, no GUI toolkit), so ``import concilium.evals`` stays cheap.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MethodPoint", "draw_accuracy_vs_tokens", "pareto_frontier", "plot_accuracy_vs_tokens"]

PNG_NAME = "accuracy_vs_tokens.png"
SVG_NAME = "accuracy_vs_tokens.svg"


@dataclass(frozen=True)
class MethodPoint:
    """One method's cost and accuracy, as a point on the plot.

    Attributes:
        name: The label drawn next to the point (e.g. ``"debate rounds=2"``).
        tokens_per_item: Mean prompt + completion tokens per item (> 0: log axis).
        accuracy: Fraction of items answered correctly.
        low: Lower end of the accuracy's interval, if known.
        high: Upper end of the accuracy's interval, if known.
        curve: For a majority@k point, the method it belongs to; points sharing a
            curve are joined by a line in increasing tokens.

    Example:
        >>> MethodPoint("single", tokens_per_item=120.0, accuracy=0.55).curve is None
        True
    """

    name: str
    tokens_per_item: float
    accuracy: float
    low: float | None = None
    high: float | None = None
    curve: str | None = None


def _dominates(a: MethodPoint, b: MethodPoint) -> bool:
    """``a`` costs no more and scores no less than ``b``, and is strictly better once."""
    no_worse = a.tokens_per_item <= b.tokens_per_item and a.accuracy >= b.accuracy
    better = a.tokens_per_item < b.tokens_per_item or a.accuracy > b.accuracy
    return no_worse and better


def pareto_frontier(points: Sequence[MethodPoint]) -> list[MethodPoint]:
    """The points no other point dominates, in increasing tokens per item.

    A point is dominated when another costs no more tokens and scores no lower
    accuracy, and is strictly better in one of the two. Equal points both stay.

    Args:
        points: The methods (and majority@k points) to compare.

    Returns:
        The non-dominated points, cheapest first.

    Example:
        >>> pts = [
        ...     MethodPoint("a", 100, 0.5),
        ...     MethodPoint("b", 200, 0.4),
        ...     MethodPoint("c", 400, 0.7),
        ... ]
        >>> [p.name for p in pareto_frontier(pts)]
        ['a', 'c']
    """
    kept = [p for p in points if not any(_dominates(q, p) for q in points)]
    return sorted(kept, key=lambda p: (p.tokens_per_item, p.accuracy))


def _check(points: Sequence[MethodPoint]) -> None:
    if not points:
        raise ValueError("nothing to plot: pass at least one MethodPoint")
    for p in points:
        if not p.tokens_per_item > 0:
            raise ValueError(
                f"{p.name!r} has tokens_per_item={p.tokens_per_item!r}; the tokens axis is "
                "logarithmic, so it must be > 0 (a method that spent no tokens has nothing to plot)"
            )


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _ensure_config_dir() -> None:
    """Give matplotlib a writable folder for its font cache when HOME is read-only."""
    if "MPLCONFIGDIR" in os.environ:
        return
    home = Path.home()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "matplotlib"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "matplotlib"
    if not (_writable(config) and _writable(cache)):
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="concilium-matplotlib-")


def _draw_curves(ax: Axes, points: Sequence[MethodPoint]) -> dict[str, str]:
    """Join each curve's points with a line; return each curve's colour."""
    colours: dict[str, str] = {}
    curves: dict[str, list[MethodPoint]] = {}
    for p in points:
        if p.curve is not None:
            curves.setdefault(p.curve, []).append(p)
    for i, (name, members) in enumerate(curves.items()):
        colours[name] = f"C{i % 9 + 1}"  # C0 is the plain methods' colour
        members.sort(key=lambda p: p.tokens_per_item)
        ax.plot(
            [p.tokens_per_item for p in members],
            [p.accuracy for p in members],
            linestyle="-",
            linewidth=1.2,
            alpha=0.6,
            color=colours[name],
            label=f"{name} (majority@k)",
        )
    return colours


def _draw_points(ax: Axes, points: Sequence[MethodPoint], colours: dict[str, str]) -> None:
    labelled: dict[tuple[float, float], int] = {}
    for p in points:
        yerr = None
        if p.low is not None and p.high is not None:
            yerr = [[max(0.0, p.accuracy - p.low)], [max(0.0, p.high - p.accuracy)]]
        ax.errorbar(
            [p.tokens_per_item],
            [p.accuracy],
            yerr=yerr,
            fmt="o",
            markersize=5 if p.curve is not None else 7,
            color=colours[p.curve] if p.curve is not None else "C0",
            ecolor="lightgray",
            capsize=3,
            zorder=3,
        )
        # points at the same place stack their labels instead of overprinting
        place = (round(p.tokens_per_item, 6), round(p.accuracy, 6))
        stacked = labelled.get(place, 0)
        labelled[place] = stacked + 1
        ax.annotate(
            p.name,
            (p.tokens_per_item, p.accuracy),
            textcoords="offset points",
            xytext=(5, 5 + 9 * stacked),
            fontsize=7,
        )


def _draw_frontier(ax: Axes, frontier: Sequence[MethodPoint]) -> None:
    xs = [p.tokens_per_item for p in frontier]
    ys = [p.accuracy for p in frontier]
    ax.step(xs, ys, where="post", color="tab:red", linewidth=1.5, label="Pareto frontier")
    ax.scatter(xs, ys, s=110, facecolors="none", edgecolors="tab:red", linewidths=1.8, zorder=4)


def draw_accuracy_vs_tokens(
    points: Sequence[MethodPoint], title: str = "Accuracy against tokens per item"
) -> Figure:
    """The figure :func:`plot_accuracy_vs_tokens` saves, drawn but not written.

    Tests and callers who want another format measure or save it themselves.

    Args:
        points: The methods to draw (at least one, all with tokens > 0).
        title: The figure's title.

    Returns:
        A matplotlib ``Figure`` (not registered with pyplot: nothing to close).

    Example:
        >>> fig = draw_accuracy_vs_tokens([MethodPoint("single", 50, 0.6)])
        >>> fig.axes[0].get_xscale()
        'log'
    """
    _check(points)
    _ensure_config_dir()
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    # Figure() directly, not pyplot: no global figure registry left to close
    fig = Figure(figsize=(7.5, 5.0), dpi=120)
    ax = fig.add_subplot()
    colours = _draw_curves(ax, points)
    _draw_points(ax, points, colours)
    _draw_frontier(ax, pareto_frontier(points))
    ax.set_xscale("log")
    ax.set_xlabel("tokens per item (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_tokens(
    points: Sequence[MethodPoint],
    out_dir: Path,
    title: str = "Accuracy against tokens per item",
) -> tuple[Path, Path]:
    """Draw accuracy against tokens per item and write it as a PNG and an SVG.

    The tokens axis is logarithmic; a point with an interval gets an error bar;
    points of the same ``curve`` (majority@k) are joined by a line; the Pareto
    frontier is a red step line with its points ringed; every point is labelled.

    Args:
        points: The methods to draw (at least one, all with tokens > 0).
        out_dir: Folder to write into (created if missing).
        title: The figure's title.

    Returns:
        The paths of ``accuracy_vs_tokens.png`` and ``accuracy_vs_tokens.svg``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> png, svg = plot_accuracy_vs_tokens([MethodPoint("single", 50, 0.6)], out)
        >>> png.name, svg.exists()
        ('accuracy_vs_tokens.png', True)
    """
    _check(points)
    fig = draw_accuracy_vs_tokens(points, title)
    import matplotlib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / PNG_NAME, out_dir / SVG_NAME
    # text stays text in the SVG (searchable, no glyph paths); a fixed salt and no
    # date make the same points give the same file
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "concilium"}):
        fig.savefig(png, format="png")
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return png, svg
