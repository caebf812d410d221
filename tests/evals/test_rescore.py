"""``concilium rescore``: an eval's summary recomputed from its folder, with no request,
on the simulated server over loopback (a test double)."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner

from concilium.agents import aclose
from concilium.agents.sim import Latency, SimConfig
from concilium.cli import main
from concilium.serving import SimServer

WORKFLOWS = Path(__file__).parent / "workflows"
# one eval for the module, on one simulated server that stays up while every test
# rescores (so "no request" is counted where the eval sent its calls); each test
# rescores its own copy of the eval's folder
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[SimServer]:
    """tests/conftest.py's simulated server (a test double), for the whole module."""
    async with SimServer(SimConfig(seed=1, latency=Latency(fixed=0.02))) as server:
        yield server
        await aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def eval_folder(sim: SimServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one real eval (3 methods, 8 items), made once; tests copy it."""
    return await _evaluated(sim, tmp_path_factory.mktemp("rescore"))


@pytest.fixture
def evaluated(eval_folder: Path, tmp_path: Path) -> Path:
    """This test's own copy of the eval's folder, free to rewrite."""
    return shutil.copytree(eval_folder, tmp_path / "out")


def _data(tmp_path: Path, n: int = 8) -> Path:
    rng = random.Random(1)
    path = tmp_path / "arith.jsonl"
    lines = []
    for i in range(n):
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        lines.append(json.dumps({"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": a + b}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def _without_wall_times(summary: dict[str, Any]) -> dict[str, Any]:
    return {"methods": [{k: v for k, v in m.items() if k != "wall_s"} for m in summary["methods"]]}


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


async def _evaluated(sim: SimServer, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    files = [str(WORKFLOWS / f) for f in ("sc.yaml", "deepconf.yaml", "debate.yaml")]
    args = ["eval", str(_data(tmp_path)), *files, "--backend", sim.url, "--out", str(out)]
    result = await asyncio.to_thread(_run, *args)
    assert result.exit_code == 0, result.output
    return out


async def test_rescore_sends_no_request_and_reproduces_the_summary(
    sim: SimServer, evaluated: Path
) -> None:
    out = evaluated
    written = json.loads((out / "summary.json").read_text())
    before = len(await sim.requests())
    assert before > 0
    # rescoring writes it again from results.jsonl alone: of the old one it reads only
    # the method order (the rows are written in the order items finish)
    order = {"methods": [{"method": m["method"]} for m in written["methods"]]}
    (out / "summary.json").write_text(json.dumps(order))
    result = await asyncio.to_thread(_run, "rescore", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert len(await sim.requests()) == before  # 0 new calls
    again = json.loads(result.stdout)
    assert _without_wall_times(again) == _without_wall_times(written)
    assert json.loads((out / "summary.json").read_text()) == again
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    methods = {m["method"]: m for m in again["methods"]}
    assert list(methods) == ["self_consistency", "deepconf", "debate"]  # the eval's order
    sc, deepconf = methods["self_consistency"], methods["deepconf"]
    # the confidence rules where the samples carry DeepConf confidences, not elsewhere
    assert deepconf["confidence_votes"]["unavailable"] is None
    assert [p["k"] for p in deepconf["confidence_votes"]["weighted_at_k"]] == [1, 2, 3, 4, 5, 6]
    assert sc["confidence_votes"]["unavailable"] and not sc["confidence_votes"]["weighted_at_k"]
    # early stopping: the sim returned logprobs to deepconf (one per token), not to sc
    assert {e["tokens_basis"] for e in deepconf["early_stopping"]} == {"exact"}
    assert {e["tokens_basis"] for e in sc["early_stopping"]} == {"expected"}
    assert [e["rule"] for e in sc["early_stopping"]][-1] == "fixed"
    # debate draws no samples: none of the sampling figures
    assert methods["debate"]["majority_at_k"] == [] and methods["debate"]["early_stopping"] == []
    table = await asyncio.to_thread(_run, "rescore", str(out))
    assert "early stopping for self_consistency" in table.output
    assert "DeepConf-high@k for deepconf (eta=90" in table.output


async def test_rows_written_before_per_sample_fields_still_rescore(
    evaluated: Path,
) -> None:
    out = evaluated
    old = []
    for row in _rows(out):  # as an eval wrote them before: no choices, bare sample turns
        row.pop("choices", None)
        for turn in row["transcript"]:
            for key in ("sample_tokens", "mean_logprob", "trace_confidences", "confidence", "kept"):
                turn.pop(key, None)
        old.append(json.dumps(row))
    (out / "results.jsonl").write_text("\n".join(old) + "\n")
    result = await asyncio.to_thread(_run, "rescore", str(out), "--json")
    assert result.exit_code == 0, result.output
    methods = {m["method"]: m for m in json.loads(result.stdout)["methods"]}
    deepconf = methods["deepconf"]
    assert [c["k"] for c in deepconf["majority_at_k"]] == [1, 2, 3, 4, 5, 6]
    assert deepconf["confidence_votes"]["unavailable"] and deepconf["oracle_pass_at_k"]
    assert {e["tokens_basis"] for e in deepconf["early_stopping"]} == {"expected"}


async def test_a_verdict_the_default_scorer_disagrees_with_asks_for_the_scorer(
    evaluated: Path, tmp_path: Path
) -> None:
    out = evaluated
    rows = _rows(out)
    rows[0]["correct"] = not rows[0]["correct"]  # as if another scorer had judged it
    (out / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    refused = await asyncio.to_thread(_run, "rescore", str(out))
    assert refused.exit_code == 2
    assert "differ from the default NumericScorer" in refused.output
    assert "--scorer" in refused.output and "Traceback" not in refused.output
    # with a scorer named, every verdict is decided again from the answers
    fixed = await asyncio.to_thread(_run, "rescore", str(out), "--scorer", "numeric", "--json")
    assert fixed.exit_code == 0, fixed.output
    # a folder that is not an eval's
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("rescore", str(empty))
    assert result.exit_code == 2 and "holds no results.jsonl" in result.output
