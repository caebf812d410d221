"""concilium eval end to end on the simulated server over loopback (a test double)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from concilium.cli import main

WORKFLOWS = Path(__file__).parent / "workflows"
METHODS = ["single", "self_consistency", "debate"]


def _data(tmp_path: Path, n: int = 10) -> Path:
    rng = random.Random(0)
    path = tmp_path / "arith.jsonl"
    lines = []
    for i in range(n):
        a, b, c = rng.randint(1, 30), rng.randint(1, 30), rng.randint(1, 9)
        lines.append(json.dumps({"id": f"q{i}", "question": f"What is {a} + {b} * {c}?",
                                 "answer": a + b * c}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def _eval(url: str, *args: str) -> Any:
    files = [str(WORKFLOWS / f) for f in ("single.yaml", "sc.yaml", "debate.yaml")]
    return CliRunner().invoke(main, ["eval", *args[:1], *files, "--backend", url, *args[1:]])


async def test_compares_three_methods_writes_results_summary_and_plot(
    sim: Any, tmp_path: Path
) -> None:
    data, out = _data(tmp_path), tmp_path / "out"
    result = await asyncio.to_thread(_eval, sim.url, str(data), "--out", str(out))
    assert result.exit_code == 0, result.output
    for name in METHODS:
        assert name in result.output
    assert "95% CI" in result.output and "p vs first" in result.output
    assert "majority@k for self_consistency" in result.output

    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 * 3
    assert {r["method"] for r in rows} == set(METHODS)
    for row in rows:
        assert set(row) >= {"id", "method", "answer", "gold", "correct", "calls",
                            "prompt_tokens", "completion_tokens", "wall_s", "transcript"}  # fmt: skip
        assert row["transcript"] and not row["failed"]
        assert row["correct"] == (row["answer"] is not None and float(row["answer"]) == float(row["gold"]))  # fmt: skip
    assert all(len(r["samples"]) == 5 for r in rows if r["method"] == "self_consistency")

    summary = json.loads((out / "summary.json").read_text())["methods"]
    assert [s["method"] for s in summary] == METHODS
    first, sc, debate = summary
    assert first["vs_first"] is None
    for s in (sc, debate):
        assert s["vs_first"]["against"] == "single" and 0 <= s["vs_first"]["mcnemar_p"] <= 1
    assert all(s["low"] <= s["accuracy"] <= s["high"] for s in summary)
    assert debate["calls_per_item"] > first["calls_per_item"]
    assert [c["k"] for c in sc["majority_at_k"]] == [1, 2, 3, 4, 5]
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "accuracy_vs_tokens.svg").read_bytes()[:2000]


async def test_rerun_same_dir_sends_no_request_and_json_summary(sim: Any, tmp_path: Path) -> None:
    data, out = _data(tmp_path, 6), tmp_path / "out"
    first = await asyncio.to_thread(_eval, sim.url, str(data), "--out", str(out))
    assert first.exit_code == 0, first.output
    before = (await sim.stats())["requests"]
    assert before > 0
    again = await asyncio.to_thread(_eval, sim.url, str(data), "--out", str(out), "--json")
    assert again.exit_code == 0, again.output
    assert (await sim.stats())["requests"] == before
    summary = json.loads(again.stdout)
    assert [s["method"] for s in summary["methods"]] == METHODS
    assert len((out / "results.jsonl").read_text().splitlines()) == 6 * 3


async def test_limit_then_full_repeats_no_finished_item(sim: Any, tmp_path: Path) -> None:
    data, out = _data(tmp_path, 6), tmp_path / "out"
    part = await asyncio.to_thread(_eval, sim.url, str(data), "--out", str(out), "--limit", "3")
    assert part.exit_code == 0, part.output
    done = (await sim.stats())["requests"]
    rows = (out / "results.jsonl").read_text().splitlines()
    assert len(rows) == 3 * 3
    full = await asyncio.to_thread(_eval, sim.url, str(data), "--out", str(out), "--json")
    assert full.exit_code == 0, full.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 3
    assert len({(r["method"], r["id"]) for r in rows}) == 6 * 3  # nothing ran twice
    assert all(r["replayed"] == 0 for r in rows)
    assert (await sim.stats())["requests"] > done


def test_bad_data_exits_2_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": \n')
    result = _eval("sim", str(data), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert f"{data}:2" in result.output and "not valid JSON" in result.output
    assert "Traceback" not in result.output


def test_bad_set_path_names_the_key_and_the_fields(tmp_path: Path) -> None:
    data = _data(tmp_path, 2)
    result = _eval("sim", str(data), "--out", str(tmp_path / "o"), "--set", "workflw.samples=1,2")
    assert result.exit_code == 2
    assert "'workflw'" in result.output and "workflow" in result.output


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_sweep_runs_the_swept_values_on_the_simulated_backend(tmp_path: Path) -> None:
    """``--set workflow.samples=1,3`` once ran the file's 8 samples for both rows."""
    data, out = _data(tmp_path, 3), tmp_path / "out"
    sc = str(WORKFLOWS / "sc.yaml")  # samples: 5 in the file
    args = ["eval", str(data), sc, "--set", "workflow.samples=1,3", "--backend", "sim"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    drawn = {(r["method"], r["id"]): len(r["samples"]) for r in _rows(out)}
    assert drawn == {
        **{("self_consistency[samples=1]", f"q{i}"): 1 for i in range(3)},
        **{("self_consistency[samples=3]", f"q{i}"): 3 for i in range(3)},
    }


async def test_a_sweep_sends_the_swept_values_to_a_backend_url(sim: Any, tmp_path: Path) -> None:
    """Counted at the server: each item asks for 1 sample in one row and 3 in the other."""
    data, out = _data(tmp_path, 3), tmp_path / "out"
    sc = str(WORKFLOWS / "sc.yaml")
    args = ["eval", str(data), sc, "--set", "workflow.samples=1,3", "--backend", sim.url]
    result = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    received = sorted(r["body"].get("n", 1) for r in await sim.requests())
    assert received == [1, 1, 1, 3, 3, 3]


def test_a_python_graph_and_a_yaml_workflow_in_one_eval(tmp_path: Path) -> None:
    (tmp_path / "my_graphs.py").write_text(
        "from concilium.agents import Agent, ModelSpec\n"
        "from concilium.graphs.patterns import self_consistency\n"
        "solver = Agent('solver', ModelSpec('hosted_vllm/m', api_base='http://127.0.0.1:9/v1'))\n"
        "review = self_consistency(solver, samples=2, name='review')\n"
    )
    data, out = _data(tmp_path, 2), tmp_path / "out"
    targets = [f"{tmp_path / 'my_graphs.py'}:review", str(WORKFLOWS / "debate.yaml")]
    args = ["eval", str(data), *targets, "--backend", "sim", "--out", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    methods = [m["method"] for m in json.loads(result.output)["methods"]]
    assert methods == ["review", "debate"]
    by_method = {r["method"]: r for r in _rows(out)}
    assert len(by_method["review"]["samples"]) == 2 and not by_method["review"]["failed"]
