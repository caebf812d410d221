"""The Evaluation page's data: ``concilium eval`` output folders read back for the UI.

A folder holds ``summary.json`` (one row per method), ``results.jsonl`` (one row per
item and method, with its transcript) and ``accuracy_vs_tokens.svg``. Each item is
turned into the same run record the Run page draws, so its transcript reads the same.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"
RESULTS = "results.jsonl"
PLOT = "accuracy_vs_tokens.svg"


@dataclass
class EvalFolder:
    """One eval output folder: its methods' summary rows and its item rows."""

    path: Path
    methods: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    @property
    def name(self) -> str:
        return self.path.name

    def items(self) -> list[tuple[str, dict[str, dict[str, Any]]]]:
        """Item ids in file order, each with its row per method."""
        by_id: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.rows:
            by_id.setdefault(str(row["id"]), {})[row["method"]] = row
        return list(by_id.items())

    def row(self, method: str, item: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["method"] == method and str(r["id"]) == item), None)

    def plot(self) -> Path | None:
        """The plot file, only if it lies inside the folder (no symlink out of it)."""
        path = (self.path / PLOT).resolve()
        return path if path.is_file() and path.parent == self.path.resolve() else None


def find_evals(dirs: Sequence[str | Path]) -> list[EvalFolder]:
    """The eval folders in ``dirs``: each one holding ``summary.json``, or its subfolders that do.

    Example:
        >>> import tempfile, pathlib, json
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "run1"
        >>> d.mkdir()
        >>> _ = (d / "summary.json").write_text(json.dumps({"methods": []}))
        >>> [e.name for e in find_evals([d.parent])]
        ['run1']
    """
    found: list[EvalFolder] = []
    for given in map(Path, dirs):
        candidates = [given] if (given / SUMMARY).is_file() else sorted(given.glob(f"*/{SUMMARY}"))
        for folder in (c if c.is_dir() else c.parent for c in candidates):
            summary = json.loads((folder / SUMMARY).read_text("utf-8"))
            results = folder / RESULTS
            # one row a "\n"-ended line: splitlines() would also cut at a U+2028 in a reply
            rows = (
                [json.loads(line) for line in results.read_text("utf-8").split("\n") if line]
                if results.is_file()
                else []
            )
            found.append(EvalFolder(folder, list(summary.get("methods", [])), rows))
    return found


def item_record(row: dict[str, Any]) -> dict[str, Any]:
    """One eval item as a run record for the run view: its transcript as turns, its samples'
    vote, its calls and tokens."""
    turns: list[dict[str, Any]] = []
    for turn in row.get("transcript") or []:
        agent = str(turn.get("agent", "?"))
        if turn.get("sample") is not None:
            agent = f"{agent}[{turn['sample']}]"
        turns.append({**turn, "agent": agent, "round": turn.get("round") or 0})
    samples = [s for s in row.get("samples") or [] if s is not None]
    votes = None
    if len(samples) > 1:
        votes = {"counts": dict(Counter(map(str, samples))), "winner": row.get("answer")}
    prompt = turns[0].get("prompt", "") if turns else ""
    question = str(prompt).rsplit("\n\n", 1)[-1] if prompt else str(row["id"])
    return {
        "run_id": f"{row['method']}-{row['id']}",
        "workflow": row["method"],
        "question": question,
        "error": row.get("error"),
        "item": {k: row.get(k) for k in ("id", "answer", "gold", "correct")},
        "events": [
            {
                "type": "turn",
                "round": t["round"],
                "agent": t["agent"],
                "answer": t.get("answer"),
                "text": t.get("text", ""),
                "t": 0,
            }
            for t in turns
        ],
        "result": {
            "answer": row.get("answer"),
            "transcript": turns,
            "calls": row.get("calls", 0),
            "usage": {
                "prompt_tokens": row.get("prompt_tokens", 0),
                "completion_tokens": row.get("completion_tokens", 0),
            },
            "elapsed_s": row.get("wall_s", 0),
            "votes": votes,
        },
    }


def render_eval_report(folder: str | Path) -> str:
    """An eval output folder as one self-contained HTML file (``concilium eval --report``):
    the summary table, the plot inline, and every item's transcript, opened from the grid."""
    import base64

    from ._render import render_page

    evals = find_evals([folder])[:1]
    if not evals:
        raise FileNotFoundError(f"{folder} holds no {SUMMARY}; run concilium eval --out {folder}")
    plot = evals[0].plot()
    return render_page(
        "evals",
        f"Evaluation: {evals[0].name}",
        evals=evals,
        report=True,
        records=[item_record(r) for r in evals[0].rows],
        plot_uri="data:image/svg+xml;base64," + base64.b64encode(plot.read_bytes()).decode()
        if plot
        else None,
    )
