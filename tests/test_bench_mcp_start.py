"""`concilium bench mcp-start` runs end to end and reports each row (one process each)."""

from __future__ import annotations

import pytest

pytest.importorskip("mcp")


def test_the_benchmark_reports_every_row_in_order() -> None:
    from concilium.bench import mcp_start

    figures = mcp_start.measure(repeats=1)
    rows = {row["row"]: row for row in figures["rows"]}
    assert list(rows) == [
        "python", "mcp SDK import", "serve mcp, no client", "handshake", "tools/list", "first call",
    ]  # fmt: skip
    assert all(row["wall_s"] > 0 for row in rows.values())
    assert all((row["cpu_s"] is None) == (name in ("handshake", "tools/list", "first call"))
               for name, row in rows.items())  # fmt: skip
    # one client's milestones, in the order they happen
    assert rows["handshake"]["wall_s"] <= rows["tools/list"]["wall_s"] <= rows["first call"]["wall_s"]  # fmt: skip
    assert isinstance(figures["handshake_within_goal"], bool)
