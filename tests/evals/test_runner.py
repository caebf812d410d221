"""The eval runner through the Python API, on the simulated server over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from concilium.evals import EvalRecord, build_methods, evaluate
from concilium.serving import Backend

WORKFLOWS = Path(__file__).parent / "workflows"
RECORDS = [EvalRecord(id=f"q{i}", question=f"What is {i} + {i} * 3?", answer=str(4 * i)) for i in range(1, 9)]  # fmt: skip


@pytest.mark.xfail(
    strict=False,
    reason="known: resumed runs of one eval share state.db through separate SQLite connections and can "
    "fail with 'database is locked' (one shared connection per eval is the fix; see issue 12 notes)",
)
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

    rows = await evaluate(RECORDS, methods, backend, tmp_path, concurrency=4)
    assert [r["id"] for r in rows] == [r.id for r in RECORDS]
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(RECORDS)  # no finished item ran again
    assert not any(r["failed"] for r in lines), [r["error"] for r in lines if r["failed"]]
    # the runs cut off mid-way were resumed: their finished calls came from the record
    resumed = [r for r in lines if r["id"] not in done and r["replayed"] > 0]
    assert resumed, "no interrupted run replayed a finished call"


async def test_model_error_marks_item_failed(tmp_path: Path) -> None:
    from concilium.serving import Faults, Latency, SimConfig, SimServer

    config = SimConfig(latency=Latency(fixed=0.0), faults=Faults(error_rate=1.0, error_status=400))
    async with SimServer(config) as server:
        methods = build_methods([WORKFLOWS / "single.yaml"])
        rows = await evaluate(RECORDS[:2], methods, Backend.parse(server.url), tmp_path)
    assert [r["failed"] for r in rows] == [True, True]
    assert all(r["error"] and not r["correct"] for r in rows)
