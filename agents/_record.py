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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from concilium._errors import UserError
from concilium._json import load_json

from ._redact import private_file
from ._types import Usage, completion_from_openai


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

    def cost(self) -> tuple[int, Usage]:
        """The model calls this record holds and their tokens (tool calls left out):
        for one run's record (``SqliteCallRecord.for_run``), what the run cost across
        all its attempts, each call once however often it was replayed.

        Example:
            >>> rec = CallRecord()
            >>> usage = {"prompt_tokens": 9, "completion_tokens": 2}
            >>> rec.put("h", {"choices": [{"message": {"content": "4"}}], "usage": usage})
            >>> rec.put("t", {"result": 4})  # a tool call
            >>> rec.cost()
            (1, Usage(prompt_tokens=9, completion_tokens=2))
        """
        calls, usage = 0, Usage()
        for response in self._data.values():
            if "choices" in response:  # a tool call's entry is {"result"} or {"error"}
                calls += 1
                usage = usage + completion_from_openai(response).usage
        return calls, usage

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

    Nothing is loaded up front: ``get`` looks a digest up by its primary key, and
    ``for_run`` gives one run the view it resumes from (that run's rows only, read
    through an index), so a file that many runs share (an eval's) costs each run
    its own calls, not everyone's.

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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(concilium_calls)")}
            if "run_id" not in columns:  # a file from before per-run loading
                self._db.execute("ALTER TABLE concilium_calls ADD COLUMN run_id TEXT")
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS concilium_calls_run ON concilium_calls (run_id)"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise _damaged(self.path, exc) from None

    @property
    def connection(self) -> sqlite3.Connection:
        """The open SQLite connection (the runs sharing this record keep their other
        tables in the same file through it, so one process holds one connection)."""
        return self._db

    def get(self, digest: str) -> dict[str, Any] | None:
        found = super().get(digest)
        if found is None:
            found = self._select_one(digest)
        return found

    def put(self, digest: str, response: dict[str, Any]) -> None:
        super().put(digest, response)
        self._insert(digest, response, None)

    def for_run(self, run_id: str) -> CallRecord:
        """The record as one run sees it: the calls recorded under ``run_id`` are read
        at once (one indexed query); the run's new calls are written with its id.

        Example:
            >>> import tempfile, os
            >>> rec = SqliteCallRecord(os.path.join(tempfile.mkdtemp(), "calls.db"))
            >>> rec.for_run("r1").put("h", {"choices": []})
            >>> len(rec.for_run("r1")), len(rec.for_run("r2")), rec.get("h")
            (1, 0, {'choices': []})
        """
        return _RunRecord(
            self._select_run(run_id),
            lookup=self._select_one,
            write=lambda digest, response: self._insert(digest, response, run_id),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _select_one(self, digest: str) -> dict[str, Any] | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT response FROM concilium_calls WHERE digest = ?", (digest,)
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None
        return None if row is None else self._decode(row[0])

    def _select_run(self, run_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT digest, response FROM concilium_calls WHERE run_id = ?", (run_id,)
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None
        return {digest: self._decode(response) for digest, response in rows}

    def _insert(self, digest: str, response: dict[str, Any], run_id: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO concilium_calls (digest, response, run_id) VALUES (?, ?, ?)",
                (digest, json.dumps(response), run_id),
            )

    def _decode(self, text: str) -> dict[str, Any]:
        try:
            return load_json(text)
        except (ValueError, TypeError) as exc:
            raise _damaged(self.path, exc) from None

    def _error(self, exc: sqlite3.DatabaseError) -> BaseException:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return exc
        return _damaged(self.path, exc)


class _RunRecord(CallRecord):
    """One run's view of a ``SqliteCallRecord`` (see ``for_run``): its rows in memory,
    a digest not among them looked up in the file (rows written before records kept
    run ids), new calls written through. Closing it leaves the file open."""

    def __init__(
        self,
        rows: dict[str, dict[str, Any]],
        *,
        lookup: Callable[[str], dict[str, Any] | None],
        write: Callable[[str, dict[str, Any]], None],
    ) -> None:
        super().__init__()
        self._data.update(rows)
        self._lookup = lookup
        self._write = write

    def get(self, digest: str) -> dict[str, Any] | None:
        found = super().get(digest)
        if found is None:
            found = self._lookup(digest)
            if found is not None:  # keyed by this run's id: one of its calls (``cost``)
                self._data[digest] = found
        return found

    def put(self, digest: str, response: dict[str, Any]) -> None:
        super().put(digest, response)
        self._write(digest, response)


def _damaged(path: Path, exc: BaseException) -> UserError:
    """A call record SQLite or JSON cannot read: say which file and what to do."""
    return UserError(
        f"the state file {str(path)!r} is damaged or not a concilium call record "
        f"({type(exc).__name__}: {exc}); move it away, or start with a new --state FILE "
        "(state_path=)"
    )
