"""concilium eval --ray: shards over a local Ray instance merge to a local run's results."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from concilium.app import Backend
from concilium.evals import (
    EvalRecord,
    ItemResult,
    build_methods,
    evaluate,
    parse_setting,
    summarise,
)
from concilium.serving import Latency, Rule, SimConfig, SimServer, Statistical

ray = pytest.importorskip("ray")

WORKFLOWS = Path(__file__).parent / "workflows"
FILES = [WORKFLOWS / "single.yaml", WORKFLOWS / "sc.yaml"]
RECORDS = [EvalRecord(id=f"q{i}", question=f"What is {i} + {i} * 3?", answer=str(4 * i)) for i in range(1, 11)]  # fmt: skip
# answers fixed by the question, not by arrival order: odd items wrong, the rest right
CONFIG = SimConfig(
    latency=Latency(fixed=0.0),
    rules=[Rule(match=r"What is [13579] \+", replies=["\\boxed{-1}"])],
    statistical=Statistical(accuracy=1.0),
)


def _stable(rows: list[ItemResult]) -> list[tuple[str, ...]]:
    keys = ("id", "method", "answer", "gold", "correct", "failed", "calls", "samples")
    return sorted(tuple(json.dumps(r[k]) for k in keys) for r in rows)


def _summary(rows: list[ItemResult], names: list[str]) -> list[dict[str, object]]:
    gold = {r.id: r.answer for r in RECORDS}

    def scorer_of(row: ItemResult) -> Callable[[str | None], bool]:
        return lambda answer: answer == gold[row["id"]]

    table = summarise(rows, names, scorer_of)
    return [{k: v for k, v in m.items() if "wall" not in k} for m in table]


def test_ray_shards_merge_to_the_local_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concilium.evals import evaluate_on_ray

    monkeypatch.chdir(tmp_path)  # Ray workers put the driver's folder on sys.path
    sweep = [parse_setting("workflow.samples=1,3")]
    swept: list[int] = []

    async def both() -> tuple[list[ItemResult], list[ItemResult]]:
        async with SimServer(CONFIG, process=True) as sim:
            backend = Backend.parse(sim.url)
            local = await evaluate(RECORDS, build_methods(FILES), backend, tmp_path / "local")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                sharded = await asyncio.to_thread(
                    evaluate_on_ray, RECORDS, FILES, [], backend, tmp_path / "ray", shards=2
                )
                await sim.reset()
                # a sweep on the workers runs the swept values, counted at the server
                await asyncio.to_thread(
                    evaluate_on_ray, RECORDS[:3], FILES[1:], sweep, backend, tmp_path / "sweep"
                )
                swept.extend(r["body"].get("n", 1) for r in await sim.requests())
            finally:
                ray.shutdown()
        return local, sharded

    local, sharded = asyncio.run(both())
    assert sorted(swept) == [1, 1, 1, 3, 3, 3]
    assert [(r["method"], r["id"]) for r in sharded] == [(r["method"], r["id"]) for r in local]
    assert _stable(sharded) == _stable(local)
    assert {r["correct"] for r in local} == {True, False}  # the comparison can tell
    lines: list[ItemResult] = [
        json.loads(x) for x in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()
    ]
    assert _stable(lines) == _stable(local)
    names = [m.name for m in build_methods(FILES)]
    assert _summary(sharded, names) == _summary(local, names)


def test_ray_refuses_a_server_per_process(tmp_path: Path) -> None:
    from concilium._errors import UserError
    from concilium.evals import evaluate_on_ray

    with pytest.raises(UserError, match="its own server"):
        evaluate_on_ray(RECORDS, FILES, [], Backend.parse("sim"), tmp_path)
