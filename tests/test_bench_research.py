"""``concilium bench research`` over the simulated server: the table, the JSON, and
the measuring (the replies are scripted, so the figures check the arithmetic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from concilium.app import Backend
from concilium.bench.research import INVENTED, measure
from concilium.cli import main

COLUMNS = [
    "method", "fact recall", "citation precision", "fabricated citations",
    "unsupported claims", "calls/question", "tokens/question", "wall s",
]  # fmt: skip
FIELDS = {
    "method", "questions", "fact_recall", "citation_precision", "fabricated_rate",
    "unsupported_rate", "citations", "fabricated", "removed", "checked_pairs", "check_calls",
    "calls_per_question", "tokens_per_question", "wall_s", "failed",
}  # fmt: skip


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the assistant's index goes under ~/.cache


def _rows(stdout: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_json_file_holds_both_methods_measured_on_the_same_questions(tmp_path: Path) -> None:
    out = tmp_path / "research.json"
    result = CliRunner().invoke(main, ["bench", "research", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text("utf-8"))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == figures
    assert "simulated server" in figures["backend"] and figures["questions"] == 8
    assistant, baseline = figures["methods"]
    assert [assistant["method"], baseline["method"]] == ["assistant", "baseline"]
    assert set(assistant) == FIELDS and set(baseline) == FIELDS
    items = figures["items"]
    assert [i["id"] for i in items["assistant"]] == [i["id"] for i in items["baseline"]]
    # the scripted writer invents an ID: the citation pass removes it before the output
    assert assistant["removed"] == 1 and assistant["fabricated"] == 0
    assert assistant["fabricated_rate"] == 0.0
    assert not any(INVENTED in i["answer"] for i in items["assistant"])
    # the scripted baseline cites it in its last answer, and nothing removes it
    assert baseline["fabricated"] == 1 and items["baseline"][-1]["fabricated"] == [INVENTED]
    assert baseline["fabricated_rate"] == round(1 / baseline["citations"], 3)
    for row in (assistant, baseline):
        name = row["method"]
        found = sum(len(i["found"]) for i in items[name])
        gold = sum(len(i["gold_facts"]) for i in items[name])
        relevant = sum(len(i["relevant"]) for i in items[name])
        assert row["fact_recall"] == round(found / gold, 3)
        assert row["citation_precision"] == round(relevant / row["citations"], 3)
        assert row["calls_per_question"] > 0 and row["tokens_per_question"] > 0
    assert baseline["calls_per_question"] == 1  # one answer call; its checks are apart
    assert baseline["check_calls"] == baseline["checked_pairs"] - baseline["fabricated"]
    # BM25 on the revenue question's words misses the revenue passage: the scripted
    # baseline then cites the first passage it retrieved, which states no gold fact
    missed = items["baseline"][1]
    assert missed["cited"] and not missed["found"] and not missed["relevant"]
    # the temporary corpus's index does not stay behind in the user's cache
    assert not list((tmp_path / "home").rglob("*.sqlite"))


def test_the_table_prints_every_column_for_both_methods_and_says_sim(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "research", "--questions", "2", "--backend", "sim"])
    assert result.exit_code == 0, result.output
    assert "simulated server -- a test double" in result.stdout
    assert "scripted replies" in result.stdout
    rows = _rows(result.stdout)
    assert rows["method"] == COLUMNS
    for method in ("assistant", "baseline"):
        assert len(rows[method]) == len(COLUMNS) and all(rows[method])
    assert rows["assistant"][3].startswith("0% (0/")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["questions"] == 2 and not list(tmp_path.glob("*.json"))


def test_an_unknown_backend_is_refused_with_the_values_that_work() -> None:
    result = CliRunner().invoke(main, ["bench", "research", "--backend", "gpu"])
    assert result.exit_code == 2
    assert "'gpu' is not a backend" in result.output and "sim" in result.output


async def test_a_url_backend_gets_no_script_and_still_measures_both_methods(sim: Any) -> None:
    # a server that knows nothing of the corpus: whatever it says, nothing invented is cited
    figures = await measure(Backend.parse(sim.url), questions=2, seed=1)
    assert figures["backend"] == f"the OpenAI-compatible server at {sim.url}"
    assistant, baseline = figures["methods"]
    assert assistant["fabricated"] == 0 and assistant["fabricated_rate"] in (0.0, None)
    assert assistant["calls_per_question"] > baseline["calls_per_question"] == 1
    # "[simulated reply] ..." is no citation, by the same rules as the citation pass
    assert baseline["citations"] == 0 and baseline["citation_precision"] is None
    assert all(len(rows) == 2 for rows in figures["items"].values())


def test_questions_whose_runs_fail_are_rows_of_the_table_not_its_end() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: every call is refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    result = CliRunner().invoke(main, ["bench", "research", "--backend", url, "--questions", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for row in figures["methods"]:
        assert row["failed"] == row["questions"] == 2 and row["fact_recall"] == 0.0
    items = [i for rows in figures["items"].values() for i in rows]
    assert all("refused" in i["error"] or "connect" in i["error"].lower() for i in items)
    assert "assistant: 2 question(s) failed" in result.output
