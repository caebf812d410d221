"""The evaluation's picture: accuracy against tokens per item, Pareto frontier marked.

Legible with dozens of points: methods and majority@k curves are told apart by the
legend (a colour and marker each), a method's early-stopping points are hollow markers
in its curve's colour (one legend entry), and only the frontier's points and the
early stops carry text (a stop: its rule), placed by measuring each label's box with
the figure's renderer so no two texts overlap.

matplotlib is imported inside :func:`draw_accuracy_vs_tokens` only, with the Agg
backend (no display, no GUI toolkit), so ``import concilium.evals`` stays cheap.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.path import Path as MplPath
    from matplotlib.transforms import Bbox

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
        stop: For an early-stopping point, the rule (``"beta"``): drawn hollow in its
            ``curve``'s colour, not joined to the curve, labelled by the rule.

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
    stop: str | None = None


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


# One colour and marker per family (a plain method, or a majority@k curve); red (C3)
# is the frontier's alone.
_COLOURS = ("C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9")
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "p")
_TRAILING_K = re.compile(r"(\d+)\s*$")
_FRONTIER = "tab:red"
_FONT = 8  # points, the labels' and the legend's size
_POINT_SIZE = 7.0  # a plain method's marker, in points
_CURVE_SIZE = 4.0  # a majority@k point's marker
_STOP_SIZE = 6.0  # an early-stopping point's hollow marker
_RING_SIZE = 11.0  # the frontier's ring around its points


@dataclass(frozen=True)
class _Style:
    colour: str
    marker: str


def _family(p: MethodPoint) -> str:
    return p.curve if p.curve is not None else p.name


def _styles(points: Sequence[MethodPoint]) -> dict[str, _Style]:
    """A style per family, in order of first appearance; a method named like a curve shares it."""
    styles: dict[str, _Style] = {}
    for p in points:
        if (family := _family(p)) not in styles:
            i = len(styles)
            styles[family] = _Style(_COLOURS[i % len(_COLOURS)], _MARKERS[i % len(_MARKERS)])
    return styles


def _curves(points: Sequence[MethodPoint]) -> dict[str, list[MethodPoint]]:
    curves: dict[str, list[MethodPoint]] = {}
    for p in points:
        if p.curve is not None and p.stop is None:
            curves.setdefault(p.curve, []).append(p)
    for members in curves.values():
        members.sort(key=lambda p: p.tokens_per_item)
    return curves


def _k(p: MethodPoint) -> int | None:
    """The k a majority@k point's name ends with (``"sc k=5"`` -> 5), if it ends with one."""
    found = _TRAILING_K.search(p.name)
    return int(found.group(1)) if found else None


def _curve_label(name: str, members: Sequence[MethodPoint]) -> str:
    ks = [k for p in members if (k := _k(p)) is not None]
    if len(ks) < len(members):
        return f"{name} majority@k"
    if min(ks) == max(ks):
        return f"{name} majority@k, k={ks[0]}"
    return f"{name} majority@k, k={min(ks)} to {max(ks)}"


def _point_label(p: MethodPoint) -> str:
    """A plain method by its name; a curve's point by its k (its colour names the
    curve); an early-stopping point by its rule."""
    if p.stop is not None:
        return p.stop
    k = _k(p) if p.curve is not None else None
    return p.name if k is None else f"k={k}"


def _error_bars(
    ax: Axes, members: Sequence[MethodPoint], colour: str, alpha: float, caps: float
) -> None:
    """One vertical bar per point that has an interval."""
    with_interval = [p for p in members if p.low is not None and p.high is not None]
    if not with_interval:
        return
    below = [max(0.0, p.accuracy - (p.low or 0.0)) for p in with_interval]
    above = [max(0.0, (p.high or 0.0) - p.accuracy) for p in with_interval]
    ax.errorbar(
        [p.tokens_per_item for p in with_interval],
        [p.accuracy for p in with_interval],
        yerr=[below, above],
        fmt="none",
        ecolor=colour,
        alpha=alpha,
        elinewidth=1.0,
        capsize=caps,
        zorder=1.5,
    )


def _draw_methods(
    ax: Axes, points: Sequence[MethodPoint], styles: dict[str, _Style]
) -> list[Line2D]:
    """Each plain method: its marker and its error bar (with caps)."""
    drawn: list[Line2D] = []
    for p in points:
        if p.curve is not None:
            continue
        style = styles[p.name]
        _error_bars(ax, [p], style.colour, alpha=0.55, caps=3)
        (dot,) = ax.plot(
            [p.tokens_per_item],
            [p.accuracy],
            linestyle="none",
            marker=style.marker,
            markersize=_POINT_SIZE,
            color=style.colour,
            markeredgecolor="white",
            zorder=4,
            label=p.name,
        )
        drawn.append(dot)
    return drawn


def _draw_curves(
    ax: Axes, points: Sequence[MethodPoint], styles: dict[str, _Style]
) -> list[Line2D]:
    """Each majority@k curve: a line through its points, small markers, thin bars."""
    drawn: list[Line2D] = []
    for name, members in _curves(points).items():
        style = styles[name]
        _error_bars(ax, members, style.colour, alpha=0.3, caps=0)
        (line,) = ax.plot(
            [p.tokens_per_item for p in members],
            [p.accuracy for p in members],
            marker=style.marker,
            markersize=_CURVE_SIZE,
            linewidth=1.4,
            color=style.colour,
            zorder=3,
            label=_curve_label(name, members),
        )
        drawn.append(line)
    return drawn


def _draw_stops(ax: Axes, points: Sequence[MethodPoint], styles: dict[str, _Style]) -> list[Line2D]:
    """Each method's early-stopping points: hollow markers in its colour, thin bars,
    one legend entry (each point's text names its rule)."""
    stops: dict[str, list[MethodPoint]] = {}
    for p in points:
        if p.stop is not None:
            stops.setdefault(_family(p), []).append(p)
    drawn: list[Line2D] = []
    for name, members in stops.items():
        style = styles[name]
        _error_bars(ax, members, style.colour, alpha=0.3, caps=0)
        (dots,) = ax.plot(
            [p.tokens_per_item for p in members],
            [p.accuracy for p in members],
            linestyle="none",
            marker=style.marker,
            markersize=_STOP_SIZE,
            markerfacecolor="white",
            markeredgecolor=style.colour,
            markeredgewidth=1.3,
            zorder=3.5,
            label=f"{name} early stops",
        )
        drawn.append(dots)
    return drawn


def _draw_frontier(ax: Axes, frontier: Sequence[MethodPoint]) -> Line2D:
    """A red step line through the frontier, its points ringed; returns the legend's handle."""
    from matplotlib.lines import Line2D

    xs, ys = [p.tokens_per_item for p in frontier], [p.accuracy for p in frontier]
    ax.step(xs, ys, where="post", color=_FRONTIER, linewidth=1.2, alpha=0.85, zorder=2)
    ring: dict[str, Any] = {
        "marker": "o",
        "markersize": _RING_SIZE,
        "markerfacecolor": "none",
        "markeredgecolor": _FRONTIER,
        "markeredgewidth": 1.5,
    }
    ax.plot(xs, ys, linestyle="none", zorder=5, **ring)
    return Line2D([], [], color=_FRONTIER, linewidth=1.2, label="Pareto frontier", **ring)


def _log_ticks(ax: Axes, decades: float) -> None:
    """Plain numbers on the tokens axis, at 1-2-5 steps when it spans few decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _frame(ax: Axes, points: Sequence[MethodPoint], title: str) -> None:
    """Axes that fit the points and their bars, with room for the labels."""
    logs = [math.log10(p.tokens_per_item) for p in points]
    pad_x = max(0.08 * (max(logs) - min(logs)), 0.15)
    ax.set_xscale("log")
    ax.set_xlim(10 ** (min(logs) - pad_x), 10 ** (max(logs) + pad_x))
    _log_ticks(ax, max(logs) - min(logs) + 2 * pad_x)
    lows = [p.accuracy if p.low is None else min(p.low, p.accuracy) for p in points]
    highs = [p.accuracy if p.high is None else max(p.high, p.accuracy) for p in points]
    span = max(max(highs) - min(lows), 0.1)
    ax.set_ylim(max(min(lows) - 0.08 * span, -0.02), min(max(highs) + 0.12 * span, 1.02))
    ax.set_xlabel("tokens per item (prompt + completion), log scale")
    ax.set_ylabel("accuracy, 95% interval")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.12)


def _legend_columns(labels: Sequence[str], width_in: float) -> int:
    """As many columns as the longest entry lets fit across the figure (at most 3)."""
    entry_pt = max(len(label) for label in labels) * 0.6 * _FONT + 30  # text + handle
    return max(1, min(3, int(width_in * 72 // entry_pt), len(labels)))


# Where a label may go: offsets from its point in points, nearest first and, at one
# distance, up-right first and then round the clock.
_RADII = (7.0, 11.0, 16.0, 22.0, 29.0, 37.0, 46.0)
_DIRECTIONS = 16
_GAP = 2.0  # pixels kept clear around a label (its white box is drawn in them)
_LEADER_FROM = 12.0  # labels further than this (points) are tied to their point by a line


@dataclass(frozen=True)
class _Spot:
    dx: float
    dy: float
    ha: Literal["left", "center", "right"]
    va: Literal["bottom", "center", "top"]
    cost: float

    @property
    def far(self) -> bool:
        """Far enough from its point to need a leader line to it."""
        return math.hypot(self.dx, self.dy) > _LEADER_FROM


def _spots() -> list[_Spot]:
    spots: list[_Spot] = []
    for r in _RADII:
        for i in range(_DIRECTIONS):
            angle = math.pi / 4 + 2 * math.pi * i / _DIRECTIONS
            dx, dy = r * math.cos(angle), r * math.sin(angle)
            ha = "left" if dx > 0.3 * r else "right" if dx < -0.3 * r else "center"
            va = "bottom" if dy > 0.3 * r else "top" if dy < -0.3 * r else "center"
            turn = min(i, _DIRECTIONS - i)
            spots.append(_Spot(dx, dy, ha, va, cost=0.25 * r + 0.1 * turn))
    return spots


_SPOTS = _spots()


def _box(x: float, y: float, w: float, h: float, spot: _Spot) -> tuple[float, float, float, float]:
    """The extents of a ``w`` x ``h`` text anchored at ``(x, y)`` with ``spot``'s alignment."""
    x0 = x - {"left": 0.0, "center": w / 2, "right": w}[spot.ha]
    y0 = y - {"bottom": 0.0, "center": h / 2, "top": h}[spot.va]
    return (x0 - _GAP, y0 - _GAP, x0 + w + _GAP, y0 + h + _GAP)


def _extents(box: Bbox) -> tuple[float, float, float, float]:
    return (box.x0, box.y0, box.x1, box.y1)


def _overlapping(box: tuple[float, float, float, float], boxes: np.ndarray) -> np.ndarray:
    """Which rows of ``boxes`` (x0, y0, x1, y1) overlap ``box``."""
    x0, y0, x1, y1 = box
    return (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)


@dataclass
class _Obstacles:
    """What a label should not cover, in display coordinates (pixels)."""

    frame: tuple[float, float, float, float]  # the axes: a label stays inside
    markers: np.ndarray  # every point's marker as (x0, y0, x1, y1); covering one costs most
    lines: list[MplPath]  # curves, the frontier, error bars (crossing one costs a little)
    line_costs: list[float]  # a curve or the frontier costs more than a pale error bar
    line_boxes: np.ndarray  # each line's extents, to skip the exact test when far
    labels: np.ndarray  # labels already placed (never covered)
    leaders: list[MplPath]  # their leader lines (never covered)

    def cost(self, box: tuple[float, float, float, float]) -> float | None:
        """None when ``box`` leaves the axes or touches a placed label."""
        fx0, fy0, fx1, fy1 = self.frame
        if box[0] < fx0 or box[2] > fx1 or box[1] < fy0 or box[3] > fy1:
            return None
        if _overlapping(box, self.labels).any():
            return None
        from matplotlib.transforms import Bbox

        exact = Bbox.from_extents(*box)
        if any(leader.intersects_bbox(exact, filled=False) for leader in self.leaders):
            return None
        covered = int(_overlapping(box, self.markers).sum())
        near = _overlapping(box, self.line_boxes).nonzero()[0]
        crossed = sum(
            self.line_costs[i] for i in near if self.lines[i].intersects_bbox(exact, filled=False)
        )
        return 100.0 * covered + crossed

    def leader_is_clear(self, leader: MplPath) -> bool:
        """A leader line may cross no placed label."""
        from matplotlib.transforms import Bbox

        return not any(
            leader.intersects_bbox(Bbox.from_extents(*b), filled=False) for b in self.labels
        )

    def add_label(self, box: Bbox) -> None:
        import numpy as np

        self.labels = np.vstack([self.labels, box.padded(_GAP).extents])


def _obstacles(ax: Axes, points: Sequence[MethodPoint], renderer: RendererBase) -> _Obstacles:
    import numpy as np
    from matplotlib.cbook import STEP_LOOKUP_MAP
    from matplotlib.collections import LineCollection
    from matplotlib.path import Path as MplPath

    to_px = ax.transData.transform
    px = ax.figure.dpi / 72  # pixels per point
    ringed = set(pareto_frontier(points))
    markers: list[tuple[float, float, float, float]] = []
    for p in points:
        size = _POINT_SIZE if p.curve is None else _STOP_SIZE if p.stop else _CURVE_SIZE
        size = _RING_SIZE if p in ringed else size
        x, y = to_px((p.tokens_per_item, p.accuracy))
        r = (size / 2 + 1) * px
        markers.append((x - r, y - r, x + r, y + r))
    lines: list[MplPath] = []
    costs: list[float] = []
    for line in ax.lines:
        xs, ys = line.get_data()
        if line.get_linestyle() in ("None", "none", "") or len(xs) < 2:  # pyright: ignore[reportArgumentType]
            continue
        xs, ys = STEP_LOOKUP_MAP[line.get_drawstyle()](xs, ys)
        lines.append(MplPath(to_px(list(zip(xs, ys, strict=True)))))
        costs.append(6.0)
    for bars in ax.collections:
        if isinstance(bars, LineCollection):
            segments = bars.get_segments()
            lines.extend(MplPath(to_px(segment)) for segment in segments)
            costs.extend([2.0] * len(segments))
    return _Obstacles(
        frame=_extents(ax.get_window_extent(renderer)),
        markers=np.array(markers).reshape(-1, 4),
        lines=lines,
        line_costs=costs,
        line_boxes=np.array([line.get_extents().extents for line in lines]).reshape(-1, 4),
        labels=np.empty((0, 4)),
        leaders=[],
    )


def _best_spot(
    room: _Obstacles, anchor: tuple[float, float], size: tuple[float, float], px: float
) -> _Spot | None:
    """The cheapest free spot for a ``size`` (pixels) label of the point at ``anchor``."""
    from matplotlib.path import Path as MplPath

    best: tuple[float, _Spot] | None = None
    for spot in _SPOTS:
        box = _box(anchor[0] + spot.dx * px, anchor[1] + spot.dy * px, *size, spot)
        cost = room.cost(box)
        if cost is None or (best is not None and cost + spot.cost >= best[0]):
            continue
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        if spot.far and not room.leader_is_clear(MplPath([centre, anchor])):
            continue
        best = (cost + spot.cost, spot)
    return None if best is None else best[1]


def _label_order(item: tuple[str, MethodPoint]) -> tuple[int, float]:
    return -len(item[0]), item[1].tokens_per_item


def _place_labels(ax: Axes, points: Sequence[MethodPoint], renderer: RendererBase) -> None:
    """Label each Pareto-frontier point, then each early-stopping point (by its
    rule), where its text overlaps no other text.

    Each label tries offsets round its point (nearest first), its box measured with
    the figure's renderer; a spot that leaves the axes or touches a placed label is
    out, and of the rest the one covering fewest markers, then fewest lines, then
    nearest wins. A far label gets a thin leader line to its point; a label with no
    free spot at all is left off (its point is still in the legend). Longest labels
    go first: they have the fewest places to fit.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.path import Path as MplPath
    from matplotlib.text import Text

    styles = _styles(points)
    room = _obstacles(ax, points, renderer)
    px = ax.figure.dpi / 72
    frontier = pareto_frontier(points)
    stops = [p for p in points if p.stop is not None and p not in frontier]
    labels = [  # the frontier's first; then each early stop's rule, where there is room
        *sorted(((_point_label(p), p) for p in frontier), key=_label_order),
        *sorted(((_point_label(p), p) for p in stops), key=_label_order),
    ]
    for text, p in labels:
        xy = (p.tokens_per_item, p.accuracy)
        anchor = tuple(ax.transData.transform(xy))
        probe = ax.figure.text(0, 0, text, fontsize=_FONT)  # measured once: a spot moves it
        extent = probe.get_window_extent(renderer)
        probe.remove()
        spot = _best_spot(room, (anchor[0], anchor[1]), (extent.width, extent.height), px)
        if spot is None:
            continue
        colour = tuple(0.8 * c for c in to_rgb(styles[_family(p)].colour))  # a shade darker: text
        leader = {"arrowstyle": "-", "color": colour, "linewidth": 0.6, "shrinkA": 0, "shrinkB": 5}
        label = ax.annotate(
            text,
            xy,
            xytext=(spot.dx, spot.dy),
            textcoords="offset points",
            ha=spot.ha,
            va=spot.va,
            fontsize=_FONT,
            color=colour,
            zorder=6,
            bbox={
                "boxstyle": "round,pad=0.15",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.85,
            },
            arrowprops=leader if spot.far else None,
        )
        label.update_positions(renderer)  # from offset points to where it is drawn
        box = Text.get_window_extent(label, renderer)  # the text alone, not its leader
        room.add_label(box)
        if spot.far:
            room.leaders.append(MplPath([box.get_points().mean(axis=0), anchor]))


def draw_accuracy_vs_tokens(
    points: Sequence[MethodPoint], title: str = "Accuracy against tokens per item"
) -> Figure:
    """The figure :func:`plot_accuracy_vs_tokens` saves, drawn but not written.

    Each method, each majority@k curve and each method's early stops is a legend
    entry (colour and marker; the stops hollow), every point keeps its error bar, and
    only the Pareto frontier's points and the early stops (by rule) carry a text
    label, placed where it collides with no other label (see
    :func:`_place_labels`). Tests and callers who want another format measure or
    save the figure themselves.

    Args:
        points: The methods to draw (at least one, all with tokens > 0).
        title: The figure's title.

    Returns:
        A matplotlib ``Figure`` with an Agg canvas (not registered with pyplot:
        nothing to close), its layout fixed.

    Example:
        >>> fig = draw_accuracy_vs_tokens([MethodPoint("single", 50, 0.6)])
        >>> fig.axes[0].get_xscale(), [t.get_text() for t in fig.axes[0].texts]
        ('log', ['single'])
    """
    _check(points)
    _ensure_config_dir()
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = 7.5
    # Figure() directly, not pyplot: no global figure registry left to close
    fig = Figure(figsize=(width, 5.0), dpi=120, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = _styles(points)
    handles = [
        *_draw_methods(ax, points, styles),
        *_draw_curves(ax, points, styles),
        *_draw_stops(ax, points, styles),
        _draw_frontier(ax, pareto_frontier(points)),
    ]
    _frame(ax, points, title)
    labels = [str(h.get_label()) for h in handles]
    columns = _legend_columns(labels, width)
    rows = -(-len(labels) // columns)
    fig.set_figheight(5.0 + 0.18 * max(0, rows - 2))  # legend rows take no room from the plot
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=_FONT)
    canvas.draw()  # lays the figure out once...
    fig.set_layout_engine("none")  # ...and keeps it, so the labels' boxes stay where measured
    _place_labels(ax, points, canvas.get_renderer())
    return fig


def plot_accuracy_vs_tokens(
    points: Sequence[MethodPoint],
    out_dir: Path,
    title: str = "Accuracy against tokens per item",
) -> tuple[Path, Path]:
    """Draw accuracy against tokens per item and write it as a PNG and an SVG.

    The tokens axis is logarithmic; a point with an interval gets an error bar;
    each method and each ``curve`` (majority@k, its points joined by a line in
    increasing tokens) has a colour, a marker and a legend entry, and a curve's
    early-stopping points (``stop``) are hollow markers of its colour with one legend
    entry; the Pareto frontier is a red step line with its points ringed, and only
    those points and the stops carry a text label (a method by its name, a curve's
    point by its ``k``, a stop by its rule), placed so no two
    texts overlap (a label with no free place is left off).

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
