"""An eval killed at any point, rerun into the same folder, accounts for every row
(issue 21): each (item, method) ends as the answer the uninterrupted eval gave, no
finished call is sent again, and every line of ``results.jsonl`` reads back.

The eval is killed, in effect, after each write that reaches its state files (every
checkpoint, every step's saved writes, every recorded call): a real ``StateStore``
copies the eval folder (the SQLite files with SQLite's backup, as a ``kill -9`` would
leave them) after each such write, and each copy is rerun on its own. A copy taken
between a step's saved writes and the next checkpoint once came back as a row with
``answer: null, failed: false`` that no rerun retried.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import concilium.graphs
from concilium.app import Backend
from concilium.evals import EvalRecord, ItemResult, build_methods, evaluate, summarise
from concilium.graphs import StateStore
from concilium.serving import SimServer

RECORDS = [EvalRecord(id=f"q{i}", question=f"What is {i} * 7?", answer=str(7 * i)) for i in range(1, 4)]  # fmt: skip
# seeded agents: the simulated server's reply depends on the prompt, not on how many
# calls came before, so a resumed call gets the reply the first eval got
WORKFLOW = """\
name: debate
models:
  m: {model: hosted_vllm/sim, api_base: http://127.0.0.1:9/v1}
agents:
  a: {model: m, max_tokens: 32, seed: 5}
  b: {model: m, max_tokens: 32, seed: 6}
workflow: {kind: debate, agents: [a, b], rounds: 2, answer: boxed}
"""


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


def recorded_calls(folder: Path) -> int:
    with sqlite3.connect(folder / "state.calls.db") as db:
        (count,) = db.execute("SELECT count(*) FROM concilium_calls").fetchone()
    db.close()
    return int(count)


def outcome(rows: list[ItemResult]) -> list[tuple[Any, ...]]:
    return [(r["id"], r["answer"], r["failed"], r["correct"]) for r in rows]


def cost(rows: list[ItemResult]) -> list[tuple[Any, ...]]:
    """Each row's calls (the ones sent plus the ones earlier attempts made) and tokens."""
    return [(r["id"], r["calls"] + r["replayed"], r["prompt_tokens"], r["completion_tokens"]) for r in rows]  # fmt: skip


def _costs(summary: Any) -> list[tuple[Any, ...]]:
    keys = ("calls_per_item", "prompt_tokens_per_item", "completion_tokens_per_item")
    return [tuple(m[k] for k in keys) for m in summary]


def lines(folder: Path) -> dict[str, ItemResult]:
    """The last line of each item in ``results.jsonl``, in item order; every line must
    read back."""
    last: dict[str, ItemResult] = {}
    for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        last[row["id"]] = row
    return {r.id: last[r.id] for r in RECORDS}


async def test_an_eval_killed_after_any_write_reruns_to_every_answer_repeating_no_call(
    sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "debate.yaml").write_text(WORKFLOW, encoding="utf-8")
    methods = build_methods([tmp_path / "debate.yaml"])
    backend = Backend.parse(sim.url)
    opened: list[KilledAfterEachWrite] = []

    def store(path: Path) -> KilledAfterEachWrite:  # the one the eval opens for its folder
        opened.append(KilledAfterEachWrite(path, tmp_path / "kills"))
        return opened[-1]

    start = await sim.stats()
    with monkeypatch.context() as patch:
        patch.setattr(concilium.graphs, "StateStore", store)
        whole = await evaluate(RECORDS, methods, backend, tmp_path / "out", concurrency=2)
    end = await sim.stats()
    assert not any(r["failed"] for r in whole) and all(r["answer"] for r in whole)
    total = sum(r["calls"] for r in whole)
    assert total == 4 * len(RECORDS)  # 2 agents x 2 rounds each
    # the rows' calls and tokens are what the server counted and reported
    assert all(r["replayed"] == 0 for r in whole)
    assert (
        total,
        sum(r["prompt_tokens"] for r in whole),
        sum(r["completion_tokens"] for r in whole),
    ) == tuple(end[k] - start[k] for k in ("requests", "prompt_tokens", "completion_tokens"))
    summary = summarise(whole)
    assert len(opened) == 1
    copies = opened[0].copies
    assert [what for what, _ in copies].count("call") == total

    for what, folder in copies:
        before = len(await sim.requests())
        owed = total - recorded_calls(folder)
        rows = await evaluate(RECORDS, methods, backend, folder, concurrency=2)
        sent = len(await sim.requests()) - before
        where = f"killed after write {folder.name} ({what})"
        assert outcome(rows) == outcome(whole), where
        assert sent == owed, where  # no finished call sent again
        # yet each resumed item costs what it cost: the calls restored from the
        # checkpoint count, the replayed ones once, with their tokens
        assert cost(rows) == cost(whole), where
        assert _costs(summarise(rows)) == _costs(summary), where
        assert outcome(list(lines(folder).values())) == outcome(whole), where
        assert await evaluate(RECORDS, methods, backend, folder) == rows, where


async def test_a_results_line_cut_by_a_kill_is_run_again_on_a_line_of_its_own(
    sim: SimServer, tmp_path: Path
) -> None:
    """The kill cut the last line of ``results.jsonl`` mid-write: the rerun runs that
    item again (from its state: no call sent) and writes its row on a new line, not
    glued to the cut one (which would lose it too, and the next rerun would run it)."""
    (tmp_path / "debate.yaml").write_text(WORKFLOW, encoding="utf-8")
    methods = build_methods([tmp_path / "debate.yaml"])
    backend = Backend.parse(sim.url)
    out = tmp_path / "out"
    whole = await evaluate(RECORDS, methods, backend, out)
    text = (out / "results.jsonl").read_text(encoding="utf-8")
    (out / "results.jsonl").write_text(text[:-40], encoding="utf-8")
    before = len(await sim.requests())
    assert outcome(await evaluate(RECORDS, methods, backend, out)) == outcome(whole)
    assert len(await sim.requests()) == before
    readable: dict[str, ItemResult] = {}
    cut = 0
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            cut += 1
            continue
        readable[row["id"]] = row
    assert cut == 1
    assert sorted(outcome(list(readable.values()))) == sorted(outcome(whole))
