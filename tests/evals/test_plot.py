"""The accuracy-against-tokens plot and its Pareto frontier."""

from __future__ import annotations

import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from concilium.evals import MethodPoint, pareto_frontier, plot_accuracy_vs_tokens


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
    for name in ["single", "debate rounds=2", "self_consistency@9", "Pareto frontier", "capitals"]:
        assert name in text
    assert "sc (majority@k)" in text  # the curve has its legend entry


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
        "from concilium.evals import MethodPoint, plot_accuracy_vs_tokens;"
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
