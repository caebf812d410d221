"""The eval runner through the Python API, on the simulated server over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from concilium._errors import UserError
from concilium.agents.ledger import SqliteCallRecord
from concilium.app import Backend
from concilium.evals import EvalRecord, build_methods, evaluate

WORKFLOWS = Path(__file__).parent / "workflows"
RECORDS = [EvalRecord(id=f"q{i}", question=f"What is {i} + {i} * 3?", answer=str(4 * i)) for i in range(1, 9)]  # fmt: skip


async def test_interrupted_eval_resumes_without_repeating_finished_work(
    sim: Any, tmp_path: Path
) -> None:
    methods = build_methods([WORKFLOWS / "debate.yaml"])
    backend = Backend.parse(sim.url)
    finished = asyncio.Event()
    seen: list[str] = []

    def on_result(row: Any) -> None:
        seen.append(row["id"])
        if len(seen) >= 2:
            finished.set()

    task = asyncio.create_task(
        evaluate(RECORDS, methods, backend, tmp_path, concurrency=4, on_result=on_result)
    )
    await asyncio.wait_for(finished.wait(), timeout=60)
    task.cancel()  # interrupted with runs in flight
    with contextlib.suppress(asyncio.CancelledError):
        await task
    first_lines = (tmp_path / "results.jsonl").read_text().splitlines()
    done = {json.loads(line)["id"] for line in first_lines}
    assert 2 <= len(done) < len(RECORDS)
    # the calls each cut-off run completed before the cut (its run id is [method, item])
    record = SqliteCallRecord(tmp_path / "state.calls.db")
    before = {r.id: len(record.for_run(json.dumps(["debate", r.id]))) for r in RECORDS}
    record.close()

    rows = await evaluate(RECORDS, methods, backend, tmp_path, concurrency=4)
    assert [r["id"] for r in rows] == [r.id for r in RECORDS]
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(RECORDS)  # no finished item ran again
    assert not any(r["failed"] for r in lines), [r["error"] for r in lines if r["failed"]]
    # the runs cut off mid-way were resumed: a finished call was neither lost nor made
    # again (debate: 3 agents x 2 rounds = 6 calls; finished rounds come from the
    # checkpoint, finished calls of the cut round from the record, as `replayed`)
    resumed = [r for r in lines if r["id"] not in done and before[r["id"]] > 0]
    assert resumed, f"no run was cut off after some of its calls: {before}"
    assert {r["id"]: before[r["id"]] + r["calls"] for r in resumed} == {r["id"]: 6 for r in resumed}
    assert all(r["replayed"] <= before[r["id"]] for r in resumed)


async def test_model_error_marks_item_failed(tmp_path: Path) -> None:
    from concilium.agents.sim import Faults, Latency, SimConfig
    from concilium.serving import SimServer

    config = SimConfig(latency=Latency(fixed=0.0), faults=Faults(error_rate=1.0, error_status=400))
    async with SimServer(config) as server:
        methods = build_methods([WORKFLOWS / "single.yaml"])
        rows = await evaluate(RECORDS[:2], methods, Backend.parse(server.url), tmp_path)
    assert [r["failed"] for r in rows] == [True, True]
    assert all(r["error"] and not r["correct"] for r in rows)


async def test_a_rerun_retries_failed_items_and_only_them(sim: Any, tmp_path: Path) -> None:
    """A failed row is not an answer: the rerun into the same folder runs those items
    again (here the server is back) and leaves finished ones alone."""
    from concilium.agents.sim import Faults, Latency, SimConfig
    from concilium.serving import SimServer

    methods = build_methods([WORKFLOWS / "single.yaml"])
    await evaluate(RECORDS[:2], methods, Backend.parse(sim.url), tmp_path)
    broken = SimConfig(latency=Latency(fixed=0.0), faults=Faults(error_rate=1.0, error_status=400))
    async with SimServer(broken) as server:
        rows = await evaluate(RECORDS[:4], methods, Backend.parse(server.url), tmp_path)
    assert [r["failed"] for r in rows] == [False, False, True, True]
    await sim.reset()
    again = await evaluate(RECORDS[:4], methods, Backend.parse(sim.url), tmp_path)
    assert [r["failed"] for r in again] == [False] * 4
    assert len(await sim.requests()) == 2  # the two failed items, nothing else
    assert again[:2] == rows[:2]


async def test_a_rerun_with_nothing_left_binds_no_backend(
    sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--backend local`` would start the embedded engine (most of a minute) to send no
    call: here no engine is installed, so any bind would fail with the install hint."""
    monkeypatch.setenv("CONCILIUM_ENGINE_HOME", str(tmp_path / "no-engine"))
    methods = build_methods([WORKFLOWS / "single.yaml"])
    first = await evaluate(RECORDS[:3], methods, Backend.parse(sim.url), tmp_path / "out")
    again = await evaluate(RECORDS[:3], methods, Backend.parse("local"), tmp_path / "out")
    assert again == first  # every item was finished: nothing bound, no engine started
    with pytest.raises(UserError, match="concilium engine install"):  # one item left: it binds
        await evaluate(RECORDS[:4], methods, Backend.parse("local"), tmp_path / "out")
