"""``concilium research``: the research assistant on a folder, over the simulated server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from concilium.cli import main
from concilium.tools.evidence import EvidenceStore

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "research_corpus"
INVENTED = "reports/annual_report_2023.pdf#p9"  # the example's scripted writer cites it


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the store's index goes under ~/.cache


def _known(tmp_path: Path) -> dict[str, str]:
    store = EvidenceStore(CORPUS, path=tmp_path / "check.sqlite")
    store.refresh()
    return {p.id: p.document for p in store.passages()}


def test_the_report_cites_only_real_passages(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    result = CliRunner().invoke(
        main,
        ["research", str(CORPUS), "What do we know about Tessary Labs?", "--backend", "sim",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = out.read_text("utf-8")
    assert report.strip() in result.output and "(backend: simulated server" in result.output
    assert INVENTED not in result.output and "#" not in report.split("## Sources")[1]
    sources = re.findall(r"^(\d+)\. (\S+), (?:lines?|page|paragraph) ", report, re.M)
    assert [n for n, _ in sources] == ["1", "2"]
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", report)}
    assert cited == {1, 2}
    documents = set(_known(tmp_path).values())
    assert all(doc in documents for _, doc in sources)
    assert "Maren Solberg" in report and "472" in report


def test_json_carries_claims_citations_verdicts_calls_and_tokens(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["research", str(CORPUS), "Tessary Labs?", "--backend", "sim", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    known = _known(tmp_path)
    assert data["fabricated"] == [INVENTED] and INVENTED not in data["report"]
    assert all(c["passage_id"] in known for c in data["citations"])
    assert {c["text"] for c in data["claims"]} >= {
        "Maren Solberg is the chief executive of Tessary Labs.",
        "Headcount at the end of 2025 was 472.",
    }
    assert all(p in known for c in data["claims"] for p in c["passages"])
    assert data["verdicts"] and all(v["supported"] for v in data["verdicts"])
    assert all(v["passage"] in known for v in data["verdicts"])
    assert data["calls"] > 0 and data["tokens"]["prompt"] > 0 and data["partial"] is False
    assert data["votes"] and data["questions"]


def test_a_folder_without_evidence_gets_the_guard_message(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "note.txt").write_text("The canteen opens at nine.\n", "utf-8")
    result = CliRunner().invoke(
        main, ["research", str(folder), "Who is the CEO?", "--backend", "sim"]
    )
    assert result.exit_code == 0, result.output
    assert "no evidence found in the folder" in result.output
