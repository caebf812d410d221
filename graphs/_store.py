"""A state file open for many runs: one connection to each SQLite file per process.

A run with a ``state_path`` opens its state file itself: the LangGraph checkpoints
(``run.db``) through an ``aiosqlite`` connection, the call record and the run
fingerprints (``run.calls.db``) through a ``sqlite3`` one. That is right for one run,
wrong for an eval that runs hundreds of them at once against one file: every run's
connection would compete for the file's write lock, and under load a resumed run
fails with "database is locked" (waiting longer instead blocks the event loop, since
a ``sqlite3`` call waits in its thread). A ``StateStore`` opens both files once; every
run given it (``run(..., store=store)``) writes through the same two connections,
whose writes are serialized in the process instead of contending for the file, and
reads its own recorded calls only (``SqliteCallRecord.for_run``).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from concilium.agents import private_file
from concilium.agents.ledger import SqliteCallRecord

__all__ = ["StateStore", "calls_path"]


def calls_path(state_path: str | Path) -> Path:
    """Where the call record of a checkpoint file lives (``x.db`` -> ``x.calls.db``)."""
    path = Path(state_path)
    return path.with_name(f"{path.stem}.calls{path.suffix or '.db'}")


class StateStore:
    """A state file (checkpoints, and the call record beside it) opened once for the
    runs that share it: ``concilium eval`` opens one per eval folder. Use it as an
    async context manager inside the event loop its runs use, and give it to each run
    as ``run(..., store=store)`` instead of ``state_path=``; resume, locks and checks
    behave as with ``state_path``.

    Args:
        path: the SQLite checkpoint file; the call record goes beside it
            (``calls_path``). Both are created readable by their owner only.

    Example:
        >>> import asyncio, os, tempfile
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run
        >>> from concilium.graphs.patterns import self_consistency
        >>> fake = FakeModel(fn=lambda agent, i, msgs: "so \\\\boxed{4}")
        >>> sc = self_consistency(Agent("solver", fake.spec()), samples=3)
        >>> async def main(path):
        ...     async with StateStore(path) as store:
        ...         first = await run(sc, "2+2?", run_id="a", store=store)
        ...         other = await run(sc, "2+2?", run_id="b", store=store)
        ...         again = await run(sc, "2+2?", run_id="a", store=store, resume=True)
        ...     return first.answer, other.calls > 0, again.calls
        >>> asyncio.run(main(os.path.join(tempfile.mkdtemp(), "state.db")))
        ('4', True, 0)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stack: AsyncExitStack | None = None
        self._checkpointer: Any = None
        self._record: SqliteCallRecord | None = None

    @property
    def checkpointer(self) -> Any:
        """The LangGraph ``AsyncSqliteSaver`` every run of this store checkpoints to."""
        if self._checkpointer is None:
            raise RuntimeError(self._closed())
        return self._checkpointer

    @property
    def record(self) -> SqliteCallRecord:
        """The call record file (each run uses its ``for_run`` view)."""
        if self._record is None:
            raise RuntimeError(self._closed())
        return self._record

    async def __aenter__(self) -> StateStore:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        if self._stack is not None:
            raise RuntimeError(f"the state store {str(self.path)!r} is already open")
        async with AsyncExitStack() as stack:
            # created 0600 before SQLite opens them: they hold the prompts and answers
            self._record = SqliteCallRecord(calls_path(self.path))
            stack.callback(self._forget)
            stack.callback(self._record.close)
            saver = AsyncSqliteSaver.from_conn_string(str(private_file(self.path)))
            self._checkpointer = await stack.enter_async_context(saver)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _forget(self) -> None:
        self._checkpointer = self._record = None

    def _closed(self) -> str:
        return (
            f"the state store {str(self.path)!r} is not open; use it as "
            "'async with StateStore(path) as store:' and run inside that block"
        )
