"""concilium eval --shard I/N and concilium merge: shard folders merge to one run's
folder, and folders that are not one eval's shards are refused."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from concilium.agents.sim import Latency, Rule, SimConfig, Statistical
from concilium.cli import main
from concilium.serving import SimServer

WORKFLOWS = Path(__file__).parent / "workflows"
FILES = [str(WORKFLOWS / "single.yaml"), str(WORKFLOWS / "sc.yaml")]
# answers fixed by the question, not by arrival order: odd items wrong, the rest right
CONFIG = SimConfig(
    latency=Latency(fixed=0.0),
    rules=[Rule(match=r"What is [13579] \+", replies=["\\boxed{-1}"])],
    statistical=Statistical(accuracy=1.0),
)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with SimServer(CONFIG) as sim:
        yield sim.url


@dataclass(frozen=True)
class Evals:
    """One eval made once for the module and only read by the tests: its data, a whole
    run (no ``--shard``) and its shards 1/3, 2/3 and 3/3, each in its own folder."""

    data: Path
    whole: Path
    shards: list[Path]


@pytest.fixture(scope="module")
def evals(tmp_path_factory: pytest.TempPathFactory) -> Evals:
    """Both merge tests read the same four folders: four evals run once, not twice."""
    root = tmp_path_factory.mktemp("shards")
    data = _write_data(root)
    made = Evals(data, root / "whole", [root / f"shard{i}" for i in (1, 2, 3)])

    async def run_them() -> None:
        async with SimServer(CONFIG) as sim:
            await _eval(sim.url, data, made.whole)
            for i, folder in enumerate(made.shards, 1):
                await _eval(sim.url, data, folder, "--shard", f"{i}/3")

    asyncio.run(run_them())
    return made


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _write_data(tmp_path)


def _write_data(folder: Path) -> Path:
    path = folder / "sums.jsonl"
    items = [{"id": f"q{i}", "question": f"What is {i} + {i} * 3?", "answer": 4 * i} for i in range(1, 11)]  # fmt: skip
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def _cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


async def _eval(url: str, data: Path, out: Path, *args: str, files: list[str] = FILES) -> None:
    result = await asyncio.to_thread(_cli, "eval", data, *files, "--backend", url, "--out", out, *args)  # fmt: skip
    assert result.exit_code == 0, result.output


def _summary(folder: Path) -> list[dict[str, Any]]:
    """summary.json without wall times (the one thing a merge cannot reproduce)."""
    methods = json.loads((folder / "summary.json").read_text())["methods"]
    return [{k: v for k, v in m.items() if k != "wall_s"} for m in methods]


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _write_rows(folder: Path, rows: list[dict[str, Any]]) -> None:
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _first_lines(path: Path, n: int, to: Path) -> Path:
    to.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))
    return to


async def test_three_shards_merge_to_one_run(evals: Evals, tmp_path: Path) -> None:
    whole_run, shards = evals.whole, evals.shards
    # item k (from 0, in file order) is in shard k % 3 + 1
    ids = [json.loads((f / "shard.json").read_text())["ids"] for f in shards]
    assert ids == [["q1", "q4", "q7", "q10"], ["q2", "q5", "q8"], ["q3", "q6", "q9"]]
    merged = await asyncio.to_thread(_cli, "merge", tmp_path / "merged", *shards)
    assert merged.exit_code == 0, merged.output
    assert "self_consistency" in merged.output and "summary.json" in merged.output
    assert _summary(tmp_path / "merged") == _summary(whole_run)
    whole = _summary(whole_run)
    assert {m["correct"] for m in whole} == {5} and whole[1]["majority_at_k"]  # it can tell
    # results.jsonl: every (method, item) once, in a single run's order
    rows = _rows(tmp_path / "merged")
    order = [(m, f"q{i}") for m in ("single", "self_consistency") for i in range(1, 11)]
    assert [(r["method"], r["id"]) for r in rows] == order
    keys = ("answer", "gold", "correct", "samples", "calls")
    single = {(r["method"], r["id"]): [r[k] for k in keys] for r in _rows(whole_run)}
    assert {(r["method"], r["id"]): [r[k] for k in keys] for r in rows} == single
    # a folder given twice counts once; merging again into the same OUT is refused
    again = await asyncio.to_thread(_cli, "merge", tmp_path / "twice", *shards, shards[0])
    assert again.exit_code == 0, again.output
    assert _summary(tmp_path / "twice") == whole
    over = await asyncio.to_thread(_cli, "merge", tmp_path / "merged", *shards)
    assert over.exit_code == 2 and "already holds results.jsonl" in over.output


async def test_merge_refuses_what_is_not_one_evals_shards(
    url: str, evals: Evals, tmp_path: Path
) -> None:
    data = evals.data
    one, two, three = evals.shards

    def refused(*folders: Path) -> str:
        result = _cli("merge", tmp_path / "out", *folders)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()
        return " ".join(result.output.split())

    assert "shard 2/3 missing (given: 1/3, 3/3)" in refused(one, three)
    # another eval's shard: other methods, other N, other data
    await _eval(url, data, tmp_path / "single", "--shard", "2/3", files=FILES[:1])
    assert "methods (['single'] vs" in refused(one, tmp_path / "single", three)
    await _eval(url, data, tmp_path / "halves", "--shard", "2/2")
    assert "N (2 vs 3)" in refused(one, two, three, tmp_path / "halves")
    fewer = _first_lines(data, 9, tmp_path / "fewer.jsonl")
    await _eval(url, fewer, tmp_path / "other", "--shard", "2/3")
    assert "their data differ" in refused(one, tmp_path / "other", three)
    # a folder without shard.json, a row that disagrees, a shard cut short
    assert "not a shard folder" in refused(evals.whole)  # a run without --shard
    shutil.copytree(two, tmp_path / "edited")
    rows = _rows(two)
    rows[0] = {**rows[0], "answer": "999", "correct": False}
    _write_rows(tmp_path / "edited", rows)
    assert "conflicting results for" in refused(one, two, tmp_path / "edited", three)
    _write_rows(tmp_path / "edited", rows[1:])
    assert "is unfinished: 1 of 6 runs missing" in refused(one, tmp_path / "edited", three)
    # a rerun of a shard into a folder of another shard is refused before it runs
    again = shutil.copytree(one, tmp_path / "one")  # (the shared shard is only read)
    other = await asyncio.to_thread(
        _cli, "eval", data, *FILES, "--backend", url, "--out", again, "--shard", "2/3"
    )
    assert other.exit_code == 2 and "holds shard 1/3 of another eval" in other.output


def test_bad_shard_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    for bad in ("0/3", "4/3", "2", "a/b"):
        result = _cli("eval", data, *FILES, "--backend", "sim", "--out", tmp_path, "--shard", bad)
        assert result.exit_code == 2 and "give I/N with 1 <= I <= N" in result.output, bad
