"""The runs the UI has seen, kept in the run's SQLite state file (table ``ui_runs``).

The graph checkpoints in the same file do not keep a run's events, question or
answer, so the UI writes one row per run beside them; resume never reads it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """CREATE TABLE IF NOT EXISTS ui_runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    question TEXT NOT NULL,
    started REAL NOT NULL,
    answer TEXT,
    record TEXT NOT NULL
)"""


@dataclass(frozen=True)
class RunSummary:
    """One row of the History page."""

    run_id: str
    workflow: str
    question: str
    started: float
    answer: str | None
    error: str | None = None


class RunHistory:
    """Runs saved in a SQLite file.

    Example:
        >>> import tempfile, os
        >>> h = RunHistory(os.path.join(tempfile.mkdtemp(), "run.db"))
        >>> h.save(
        ...     {
        ...         "run_id": "r1",
        ...         "workflow": "debate",
        ...         "question": "q",
        ...         "started": 1.0,
        ...         "events": [],
        ...         "result": {"answer": "84"},
        ...     }
        ... )
        >>> [r.answer for r in h.list()], h.get("r1")["question"]
        (['84'], 'q')
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # the UI saves from worker threads: its own writes queue here, not on the file's lock
        self._writing = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute(_SCHEMA)
        return db

    def save(self, record: dict[str, Any]) -> None:
        """Insert or replace the run ``record`` (run_id, workflow, question, started,
        events, result)."""
        result = record.get("result") or {}
        with self._writing, self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO ui_runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record["run_id"],
                    record["workflow"],
                    record["question"],
                    record.get("started", time.time()),
                    result.get("answer"),
                    json.dumps(record, ensure_ascii=False),
                ),
            )
        db.close()

    def list(self) -> list[RunSummary]:
        """The saved runs, newest first."""
        if not self.path.exists():
            return []
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT run_id, workflow, question, started, answer,"
                " json_extract(record, '$.error') FROM ui_runs "
                "ORDER BY started DESC"
            ).fetchall()
        finally:
            db.close()
        return [RunSummary(*row) for row in rows]

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The record of ``run_id``, or None."""
        if not self.path.exists():
            return None
        db = self._connect()
        try:
            row = db.execute("SELECT record FROM ui_runs WHERE run_id = ?", (run_id,)).fetchone()
        finally:
            db.close()
        return json.loads(row[0]) if row else None
