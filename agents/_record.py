"""The call record: request hash -> response, which makes resume exact.

A run that is resumed (same record, same call keys) gets every call that already
completed from here instead of from the model, so nothing is paid for twice and the
transcript is the one the first attempt produced. It is also what record/replay
tests use. ``CallRecord`` keeps it in memory; ``SqliteCallRecord`` in a file (next to
the LangGraph checkpoint, typically).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from concilium._errors import UserError

from ._redact import private_file


class CallRecord:
    """An in-memory record of completed calls."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}

    def get(self, digest: str) -> dict[str, Any] | None:
        return self._data.get(digest)

    def put(self, digest: str, response: dict[str, Any]) -> None:
        self._data[digest] = response

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        """Release resources (nothing to do in memory)."""


class NoRecord(CallRecord):
    """Keeps nothing: calls made outside a run are neither recorded nor replayed."""

    def put(self, digest: str, response: dict[str, Any]) -> None:
        pass


class SqliteCallRecord(CallRecord):
    """A record persisted in a SQLite file; safe to reopen after a crash. A new file
    is created readable by its owner only (mode 0600; SQLite gives its journal the
    same mode): it holds every reply of the run.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "calls.db")
        >>> rec = SqliteCallRecord(path)
        >>> rec.put("h", {"choices": []})
        >>> rec.close()
        >>> SqliteCallRecord(path).get("h")
        {'choices': []}
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = private_file(path)
        # check_same_thread=False: LangGraph may run sync pieces in worker threads.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS concilium_calls (digest TEXT PRIMARY KEY, response TEXT)"
            )
            for digest, response in self._db.execute(
                "SELECT digest, response FROM concilium_calls"
            ):
                self._data[digest] = json.loads(response)
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise _damaged(self.path, exc) from None

    def put(self, digest: str, response: dict[str, Any]) -> None:
        super().put(digest, response)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO concilium_calls VALUES (?, ?)",
                (digest, json.dumps(response)),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _damaged(path: Path, exc: BaseException) -> UserError:
    """A call record SQLite or JSON cannot read: say which file and what to do."""
    return UserError(
        f"the state file {str(path)!r} is damaged or not a concilium call record "
        f"({type(exc).__name__}: {exc}); move it away, or start with a new --state FILE "
        "(state_path=)"
    )
