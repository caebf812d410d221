"""A run killed at any point resumes to the answer it would have given (issue 21).

The run is killed, in effect, after each write that reaches its state files: every
checkpoint, every step's saved writes (``aput_writes``), every recorded call. A real
``StateStore`` copies both SQLite files (with SQLite's backup, as a ``kill -9`` would
leave them) after each such write; each copy is then resumed on its own. A copy taken
between a step's saved writes and the next checkpoint once resumed to ``answer: None``
with no error: LangGraph's ``next`` leaves out a step whose writes are saved, and the
runtime took "no next step" for "finished".
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from concilium import RunError
from concilium.agents import Agent, Usage
from concilium.agents.ledger import SqliteCallRecord
from concilium.graphs import END, START, Graph, StateStore, partial_result, run
from concilium.graphs.patterns import debate
from concilium.serving import SimServer

QUESTION = "What is 6 * 7?"


class KilledAfterEachWrite(StateStore):
    """A real ``StateStore`` that copies its folder's state (``*.db`` with SQLite's
    backup, ``*.jsonl`` as they are) into ``copies/NNN`` after each write that reaches
    its files: each copy is what a kill right after that write leaves behind."""

    def __init__(self, path: Path, copies: Path) -> None:
        super().__init__(path)
        self.copies: list[tuple[str, Path]] = []
        self._into = copies

    async def __aenter__(self) -> KilledAfterEachWrite:
        await super().__aenter__()
        saver = self.checkpointer
        for name in ("aput", "aput_writes"):  # a checkpoint, a step's saved writes
            setattr(saver, name, self._then_copy(name, getattr(saver, name)))
        insert = self.record._insert  # where a finished call is recorded

        def insert_then_copy(digest: str, response: dict[str, Any], run_id: str | None) -> None:
            insert(digest, response, run_id)
            self._copy("call")

        self.record._insert = insert_then_copy
        return self

    def _then_copy(
        self, what: str, write: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def write_then_copy(*args: Any, **kwargs: Any) -> Any:
            done = await write(*args, **kwargs)
            self._copy(what)
            return done

        return write_then_copy

    def _copy(self, what: str) -> None:
        folder = self._into / f"{len(self.copies):03d}"
        folder.mkdir(parents=True)
        for path in self.path.parent.iterdir():
            if path.suffix == ".db":
                source, target = sqlite3.connect(path), sqlite3.connect(folder / path.name)
                source.backup(target)
                source.close()
                target.close()
            elif path.suffix == ".jsonl":
                shutil.copy(path, folder / path.name)
        self.copies.append((what, folder))


def recorded_calls(folder: Path, run_id: str) -> int:
    record = SqliteCallRecord(folder / "state.calls.db")
    try:
        return len(record.for_run(run_id))
    finally:
        record.close()


def turns(result: Any) -> list[tuple[Any, ...]]:
    return [(t["agent"], t["round"], t["answer"]) for t in result.transcript]


async def test_a_run_killed_after_any_write_resumes_to_its_answer_repeating_no_call(
    sim: SimServer, tmp_path: Path
) -> None:
    # seeded agents: the simulated server's reply depends on the prompt, not on how
    # many calls came before, so a resumed call gets the reply the first run got
    agents = [Agent(name, sim.spec(), max_tokens=32, seed=7) for name in ("ann", "bob")]
    graph = debate(agents, rounds=3)
    start = await sim.stats()
    async with KilledAfterEachWrite(tmp_path / "state.db", tmp_path / "kills") as store:
        whole = await run(graph, QUESTION, run_id="r", store=store)
    assert whole.answer is not None and whole.calls == 6
    # what the run cost, counted by the server: every request and the tokens it reported
    end = await sim.stats()
    cost = (
        end["requests"] - start["requests"],
        Usage(
            end["prompt_tokens"] - start["prompt_tokens"],
            end["completion_tokens"] - start["completion_tokens"],
        ),
    )
    assert cost[0] == 6 and cost[1].prompt_tokens > 0 and cost[1].completion_tokens > 0
    assert (whole.calls, whole.usage) == (whole.total_calls, whole.total_usage) == cost
    kinds = [what for what, _ in store.copies]
    assert kinds.count("call") == 6 and kinds.count("aput") >= 8, kinds  # 3 rounds, 2 steps each

    for what, folder in store.copies:
        before = len(await sim.requests())
        owed = whole.calls - recorded_calls(folder, "r")
        resumed = await run(graph, QUESTION, run_id="r", state_path=folder / "state.db", resume=True)  # fmt: skip
        sent = len(await sim.requests()) - before
        where = f"killed after write {folder.name} ({what})"
        assert (resumed.answer, resumed.votes) == (whole.answer, whole.votes), where
        assert turns(resumed) == turns(whole), where
        # only the calls that had not finished are sent: none recorded is sent again
        assert sent == resumed.calls == owed, where
        # yet it cost what the uninterrupted run cost: the steps restored from the
        # checkpoint and the calls replayed count once each, with their tokens
        assert (resumed.total_calls, resumed.total_usage) == cost, where
        again = await run(graph, QUESTION, run_id="r", state_path=folder / "state.db", resume=True)  # fmt: skip
        assert (again.answer, again.calls) == (whole.answer, 0), where
        assert (again.total_calls, again.total_usage) == cost, where
        assert again.to_json()["total_usage"] == whole.to_json()["total_usage"], where


async def test_a_run_that_stops_before_its_end_is_a_failure_not_an_empty_answer(
    tmp_path: Path,
) -> None:
    """A graph that pauses (LangGraph's ``interrupt``) leaves steps to run: the run
    fails with ``RunError`` naming them, and resuming ends no better."""
    from langgraph.types import interrupt

    async def ask(state: Any) -> dict[str, Any]:
        return {"answer": str(interrupt("which one?"))}

    graph = Graph("paused", state={"answer": None})
    graph.add_node("ask", ask, writes=["answer"]).add_edge(START, "ask").add_edge("ask", END)
    for resume in (False, True):
        with pytest.raises(
            RunError, match=r"stopped before the end of its workflow with steps left \(ask\)"
        ) as info:
            await run(graph, "q", run_id="p", state_path=tmp_path / "s.db", resume=resume)
        done = partial_result(info.value)
        assert done is not None and done.partial and done.answer is None
