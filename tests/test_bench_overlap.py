"""``concilium bench overlap`` on the simulated server: both modes run the same task,
the overlapped one's tool starts while its stream is open, the other's after; the
table and the JSON carry the figures (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from concilium.cli import main

TASK_FIELDS = {
    "mode", "wall_s", "tool_calls", "tool_started_s", "tool_ended_s", "stream_ended_s",
    "overlap", "answer", "text",
}  # fmt: skip


def test_both_modes_run_the_same_task_and_only_the_overlapped_one_overlaps(
    tmp_path: Path,
) -> None:
    out = tmp_path / "overlap.json"
    args = ["bench", "overlap", "--tasks", "2", "--tool-latency", "0.05", "--per-token", "0.005",
            "--tokens", "20", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text("utf-8"))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == figures
    assert "simulated server" in figures["backend"] and "simulated server" in result.stdout
    assert "| overlapped |" in result.stdout and "| run_then_resume |" in result.stdout
    assert {"modes", "settings", "ratio_resume_over_overlapped", "tasks"} <= set(figures)
    assert figures["ratio_resume_over_overlapped"] > 0
    modes = figures["modes"]
    assert sorted(modes) == ["overlapped", "run_then_resume"]
    for f in modes.values():
        assert set(f) == {"tasks", "wall_s_median", "tool_calls", "overlap_mean"}
        assert f["tasks"] == 2 and f["tool_calls"] == 2  # one call per task in both modes
    tasks = figures["tasks"]
    assert [t["mode"] for t in tasks] == ["overlapped", "run_then_resume"] * 2
    assert all(set(t) == TASK_FIELDS for t in tasks)
    # the same words decoded and the same answer in both modes
    assert len({t["text"] for t in tasks}) == 1 and {t["answer"] for t in tasks} == {"1874"}
    assert tasks[0]["text"].startswith('[CALL] c1 [HEAD] lookup("lighthouse") [END] note0')
    for t in tasks:
        assert t["tool_started_s"] < t["tool_ended_s"]
        if t["mode"] == "overlapped":  # dispatched mid-stream: the stream was still open
            assert t["tool_started_s"] < t["stream_ended_s"] and t["overlap"] > 0
        else:  # the request stopped at the call; the tool ran after it
            assert t["tool_started_s"] >= t["stream_ended_s"] and t["overlap"] == 0
