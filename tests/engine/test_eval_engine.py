"""``concilium eval`` on the real engine (Gemma 3 270M base): three methods on a
shipped task, a small item count. Asserts the outputs exist and agree with each
other and with each method's shape, never a fixed accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from concilium.serving.engine import EngineHome

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 4
METHODS = {  # workflow file -> (method name, model calls per item, samples per item)
    "base_single": (1, 1),
    "base_self_consistency": (1, 9),
    "base_debate": (6, 3),
}


def _eval(out: Path) -> subprocess.CompletedProcess[str]:
    workflows = [f"examples/{name}.yaml" for name in METHODS]
    return subprocess.run(
        [sys.executable, "-P", "-m", "concilium", "eval", "examples/data/capitals.jsonl",
         *workflows, "--backend", "local", "--limit", str(ITEMS), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _engine_log() -> str:
    """The newest engine log's tail: why the engine stopped answering, if it did."""
    logs = sorted((EngineHome().root / "logs").glob("port-*.log"), key=lambda f: f.stat().st_mtime)
    return logs[-1].read_text(errors="replace")[-4000:] if logs else "(no engine log)"


def test_eval_compares_three_methods_on_capitals(tmp_path: Path) -> None:
    # --backend local: the CLI starts its own engine, as a user runs it (not the session fixture's)
    out = tmp_path / "eval"
    done = _eval(out)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"] if isinstance(summary, dict) else summary
    assert [m["method"] for m in methods] == list(METHODS)
    pngs = [p for p in out.iterdir() if p.suffix == ".png"]
    errors = {r["error"] for r in rows if r["failed"]}
    assert not errors, f"{errors}\nengine log:\n{_engine_log()}"
    assert pngs, done.stdout[-3000:]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert any(p.suffix == ".svg" for p in out.iterdir())
    for m in methods:
        name = m["method"]
        mine = [r for r in rows if r["method"] == name]
        calls, samples = METHODS[name]
        assert len(mine) == m["items"] == ITEMS
        assert len({r["id"] for r in mine}) == ITEMS
        assert not any(r["failed"] for r in mine), [r["error"] for r in mine]
        assert m["correct"] == sum(r["correct"] for r in mine)
        assert abs(m["accuracy"] - m["correct"] / ITEMS) < 1e-9
        assert all(r["calls"] == calls for r in mine), [r["calls"] for r in mine]
        assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in mine)
        mean_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in mine) / ITEMS
        assert abs(m["tokens_per_item"] - mean_tokens) < 1e-6
        assert all(r["answer"] is not None for r in mine if r["correct"])
        if name == "base_self_consistency":
            assert all(len(r["samples"]) == samples for r in mine)
    # a rerun with the same folder resumes: every item is finished, no call is sent
    again = _eval(out)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rerun) == len(rows)
