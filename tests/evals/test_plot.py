"""The accuracy-against-tokens plot and its Pareto frontier."""

from __future__ import annotations

import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

from concilium.evals._plot import (
    MethodPoint,
    draw_accuracy_vs_tokens,
    pareto_frontier,
    plot_accuracy_vs_tokens,
)


def _names(points: list[MethodPoint]) -> list[str]:
    return [p.name for p in points]


def test_frontier_keeps_exactly_the_undominated_points_cheapest_first() -> None:
    points = [
        MethodPoint("cheap", 100, 0.50),
        MethodPoint("worse and dearer", 200, 0.45),  # dominated by cheap
        MethodPoint("middle", 300, 0.60),
        MethodPoint("same cost, lower", 300, 0.55),  # dominated by middle (equal tokens)
        MethodPoint("same accuracy, dearer", 500, 0.60),  # dominated by middle (equal accuracy)
        MethodPoint("best", 900, 0.80),
        MethodPoint("dearest", 2000, 0.79),  # dominated by best
    ]
    assert _names(pareto_frontier(points)) == ["cheap", "middle", "best"]
    assert _names(pareto_frontier(list(reversed(points)))) == ["cheap", "middle", "best"]


def test_frontier_keeps_ties_and_single_points() -> None:
    twins = [MethodPoint("a", 100, 0.5), MethodPoint("b", 100, 0.5)]
    assert sorted(_names(pareto_frontier(twins))) == ["a", "b"]
    assert _names(pareto_frontier([MethodPoint("only", 10, 0.0)])) == ["only"]
    assert pareto_frontier([]) == []


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_png_and_an_svg_naming_every_method(tmp_path: Path) -> None:
    points = [
        MethodPoint("single", 60, 0.55, 0.40, 0.69),
        MethodPoint("debate rounds=2", 900, 0.62, 0.48, 0.74),
        *(
            MethodPoint(f"self_consistency@{k}", 60 * k, acc, acc - 0.1, acc + 0.1, curve="sc")
            for k, acc in [(1, 0.55), (3, 0.6), (9, 0.66)]
        ),
    ]
    png, svg = plot_accuracy_vs_tokens(points, tmp_path / "new" / "dir", title="capitals")
    assert (png.name, svg.name) == ("accuracy_vs_tokens.png", "accuracy_vs_tokens.svg")
    assert png.parent == svg.parent == tmp_path / "new" / "dir"
    assert _png_size(png) == (900, 600)  # 7.5 x 5 inches at 120 dpi
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    # the methods and the curve are legend entries; the frontier's majority@k point is
    # labelled by its k (its colour names the curve)
    for name in ["single", "debate rounds=2", "sc majority@k, k=1 to 9", "Pareto frontier"]:
        assert name in text
    assert "capitals" in text
    assert "k=9" in text


def test_plot_is_the_same_file_for_the_same_points(tmp_path: Path) -> None:
    points = [MethodPoint("a", 10, 0.2), MethodPoint("b", 1000, 0.9, 0.8, 0.95)]
    _, first = plot_accuracy_vs_tokens(points, tmp_path / "1")
    _, second = plot_accuracy_vs_tokens(points, tmp_path / "2")
    assert first.read_bytes() == second.read_bytes()


def test_plot_refuses_what_a_log_axis_cannot_show(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tokens_per_item=0"):
        plot_accuracy_vs_tokens([MethodPoint("free", 0, 0.5)], tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        plot_accuracy_vs_tokens([], tmp_path)


def test_importing_evals_does_not_import_matplotlib() -> None:
    code = "import sys, concilium.evals; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_plot_works_when_home_cannot_be_written(tmp_path: Path) -> None:
    """matplotlib writes a font cache; with HOME unusable it goes to a temporary folder.

    HOME lies under a regular file, so no folder can be made there, even by root.
    """
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = (
        "from pathlib import Path; import sys;"
        "from concilium.evals._plot import MethodPoint, plot_accuracy_vs_tokens;"
        "print(plot_accuracy_vs_tokens([MethodPoint('a', 5, 0.5)], Path(sys.argv[1]))[0].exists())"
    )
    env = {"HOME": str(blocker / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    # matplotlib's own complaints when it has to find a folder by itself
    assert "mkdir -p failed" not in out.stderr
    assert "created a temporary cache directory" not in out.stderr


# --- legibility at 30 points: 3 methods and 3 majority@k curves of 9 k values each ---
# Crowded on purpose, like a real run: the curves' points sit within a few hundredths
# of accuracy of each other and share the token range of the single-call methods.


def _thirty_points() -> list[MethodPoint]:
    def interval(acc: float, half: float) -> tuple[float, float]:
        return max(0.0, acc - half), min(1.0, acc + half)

    points = [
        MethodPoint("single", 78.0, 0.875, *interval(0.875, 0.12)),
        MethodPoint("self_consistency", 97.0, 0.875, *interval(0.875, 0.12)),
        MethodPoint("debate rounds=2", 480.0, 0.875, *interval(0.875, 0.12)),
    ]
    curves = {
        "self_consistency": (11.0, [0.79, 0.79, 0.857, 0.87, 0.87, 0.875, 0.875, 0.875, 0.88]),
        "sample": (12.0, [0.80, 0.83, 0.85, 0.86, 0.87, 0.87, 0.88, 0.88, 0.90]),
        "critique": (30.0, [0.74, 0.80, 0.82, 0.84, 0.86, 0.87, 0.87, 0.88, 0.89]),
    }
    for curve, (per_sample, accuracies) in curves.items():
        for k, acc in enumerate(accuracies, start=1):
            points.append(
                MethodPoint(
                    f"{curve} k={k}", per_sample * k, acc, *interval(acc, 0.15), curve=curve
                )
            )
    assert len(points) == 30
    return points


def _text_boxes(fig: Figure) -> list[tuple[Text, Bbox]]:
    """Every visible, non-empty text in the figure with its box in display coordinates.

    The box is the text's own (``Text.get_window_extent``): an annotation's leader line
    is not text, and is checked on its own below.
    """
    canvas = FigureCanvasAgg(fig)  # the PNG's renderer, at the figure's dpi
    canvas.draw()
    renderer = canvas.get_renderer()
    # a tick outside the view keeps a label that is never drawn
    unseen: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
            unseen |= {id(t.label1) for t in ticks if not low <= t.get_loc() <= high}
    return [
        (t, Text.get_window_extent(t, renderer))
        for t in fig.findobj(Text)
        if isinstance(t, Text) and t.get_visible() and t.get_text().strip() and id(t) not in unseen
    ]


def test_no_two_texts_overlap_at_thirty_points() -> None:
    """Labels, legend, ticks, axis labels and title: no two boxes meet."""
    fig = draw_accuracy_vs_tokens(_thirty_points())
    boxes = _text_boxes(fig)
    assert len(boxes) > 20  # the labels, legend entries and ticks are all there
    clashes = [
        (a.get_text(), b.get_text())
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]
    assert not clashes, clashes
    # a label's leader line (from its text to its point) crosses no other text
    (ax,) = fig.axes
    for label in ax.texts:
        if isinstance(label, Annotation) and label.arrow_patch is not None:
            own = Text.get_window_extent(label)
            leader = MplPath([own.get_points().mean(axis=0), ax.transData.transform(label.xy)])
            crossed = [
                t.get_text() for t, box in boxes if t is not label and leader.intersects_bbox(box)
            ]
            assert not crossed, (label.get_text(), crossed)


def test_only_the_frontier_points_are_labelled_and_each_method_is_in_the_legend() -> None:
    points = _thirty_points()
    fig = draw_accuracy_vs_tokens(points)
    (ax,) = fig.axes
    labelled = {
        (round(a.xy[0], 6), round(a.xy[1], 6)) for a in ax.texts if isinstance(a, Annotation)
    }
    frontier = {
        (round(p.tokens_per_item, 6), round(p.accuracy, 6)) for p in pareto_frontier(points)
    }
    assert labelled == frontier
    (legend,) = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries[:3] == ["single", "self_consistency", "debate rounds=2"]
    for curve in ["self_consistency", "sample", "critique"]:
        assert f"{curve} majority@k, k=1 to 9" in entries
    assert "Pareto frontier" in entries
    # every point keeps its error bar: one vertical segment per point
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert sum(len(c.get_segments()) for c in bars) == 30
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel().startswith("tokens per item (prompt + completion)")
    assert ax.get_ylabel() == "accuracy, 95% interval"


def test_thirty_points_write_a_png_and_an_svg_with_the_legend(tmp_path: Path) -> None:
    png, svg = plot_accuracy_vs_tokens(_thirty_points(), tmp_path)
    assert _png_size(png)[0] > 0
    root = ET.parse(svg).getroot()  # valid XML
    texts = {"".join(t.itertext()).strip() for t in root.iter() if t.tag.endswith("text")}
    for entry in ["single", "debate rounds=2", "critique majority@k, k=1 to 9", "Pareto frontier"]:
        assert entry in texts
