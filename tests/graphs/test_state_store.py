"""One state file open for many runs (issue 12): a ``StateStore`` shared by runs in
flight at once, each of which resumes from its own recorded calls; a call record file
written before records kept run ids still replays."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from concilium import UserError
from concilium.agents import Agent
from concilium.agents.ledger import SqliteCallRecord
from concilium.graphs import StateStore, run
from concilium.graphs.patterns import debate


def locks(folder: Path) -> list[Path]:
    return list(folder.glob("*.lock"))


def team(sim: Any) -> list[Agent]:
    return [Agent(name, sim.spec(), max_tokens=32) for name in ("ann", "bob")]


async def test_runs_in_flight_share_one_store_and_each_resumes_its_own(
    sim: Any, tmp_path: Path
) -> None:
    graph = debate(team(sim), rounds=2)
    ids = [f"r{i}" for i in range(24)]
    async with StateStore(tmp_path / "state.db") as store:
        first = await asyncio.gather(*(run(graph, f"What is {i} * 7?", run_id=r, store=store) for i, r in enumerate(ids)))  # fmt: skip
        again = await asyncio.gather(*(run(graph, f"What is {i} * 7?", run_id=r, store=store, resume=True) for i, r in enumerate(ids)))  # fmt: skip
    assert [r.calls for r in first] == [4] * len(ids)
    assert [r.calls for r in again] == [0] * len(ids)
    assert [r.answer for r in again] == [r.answer for r in first]
    record = SqliteCallRecord(tmp_path / "state.calls.db")
    assert [len(record.for_run(r)) for r in ids] == [4] * len(ids)  # each run reads its own
    record.close()
    # the file is the one run(state_path=) uses: a resume through it repeats nothing
    resumed = await run(graph, "What is 0 * 7?", run_id="r0", state_path=tmp_path / "state.db", resume=True)  # fmt: skip
    assert resumed.calls == 0
    assert not locks(tmp_path)


async def test_state_path_and_store_together_are_refused(sim: Any, tmp_path: Path) -> None:
    graph = debate(team(sim), rounds=1)
    async with StateStore(tmp_path / "a.db") as store:
        with pytest.raises(UserError, match="not both"):
            await run(graph, "What is 2 * 7?", store=store, state_path=tmp_path / "b.db")


def test_a_closed_store_says_how_to_open_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="async with StateStore"):
        StateStore(tmp_path / "state.db").record  # noqa: B018


def test_a_call_record_from_before_run_ids_still_replays(tmp_path: Path) -> None:
    path = tmp_path / "run.calls.db"
    with sqlite3.connect(path) as db:  # the table as earlier versions wrote it
        db.execute("CREATE TABLE concilium_calls (digest TEXT PRIMARY KEY, response TEXT)")
        db.execute("""INSERT INTO concilium_calls VALUES ('h', '{"choices": []}')""")
    db.close()
    record = SqliteCallRecord(path)
    view = record.for_run("r1")
    assert (len(view), view.get("h"), view.get("missing")) == (0, {"choices": []}, None)
    view.put("new", {"choices": [1]})
    assert len(record.for_run("r1")) == 1 and record.get("new") == {"choices": [1]}
    record.close()
