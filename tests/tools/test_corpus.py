"""The synthetic corpus: deterministic, every format, gold facts on real passages."""

from __future__ import annotations

import json
from pathlib import Path

from concilium.tools._ingest import ingest_folder
from concilium.tools.evidence import EvidenceStore, write_corpus

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "research_corpus"


def _texts(folder: Path) -> dict[str, str]:
    return {p.id: p.text for p in ingest_folder(folder).passages}


def test_the_shipped_corpus_is_a_fresh_generation(tmp_path: Path) -> None:
    write_corpus(tmp_path, seed=0)
    assert _texts(SHIPPED) == _texts(tmp_path)
    assert (SHIPPED / "questions.jsonl").read_text() == (tmp_path / "questions.jsonl").read_text()
    pdf = "reports/annual_report_2025.pdf"
    assert (SHIPPED / pdf).read_bytes() == (tmp_path / pdf).read_bytes()  # no timestamps


def test_formats_distractors_and_a_stale_report(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path, seed=3)
    suffixes = {Path(d).suffix for d in manifest.documents}
    assert {".md", ".html", ".pdf", ".docx", ".txt"} <= suffixes
    assert len(manifest.documents) >= 10
    assert any(d.startswith("distractors/") for d in manifest.documents)
    texts = _texts(tmp_path)
    old = texts["reports/annual_report_2024.pdf#p2"]
    new = texts["reports/annual_report_2025.pdf#p2"]
    assert old != new and "Superseded" in texts["reports/annual_report_2024.pdf#p1"]
    assert ingest_folder(tmp_path).notes == []


def test_gold_facts_sit_in_their_supporting_passages(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path, seed=7)
    texts = _texts(tmp_path)
    lines = (tmp_path / "questions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [q.id for q in manifest.questions]
    for question in manifest.questions:
        assert question.supports, question
        for passage_id in question.supports:
            assert any(fact in texts[passage_id] for fact in question.gold_facts), passage_id


def test_seeds_differ(tmp_path: Path) -> None:
    a = write_corpus(tmp_path / "a", seed=1)
    b = write_corpus(tmp_path / "b", seed=2)
    assert [q.gold_facts for q in a.questions] != [q.gold_facts for q in b.questions]


async def test_the_store_finds_the_gold_passage_for_a_question(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path / "corpus", seed=0)
    store = EvidenceStore(tmp_path / "corpus", path=tmp_path / "index.sqlite")
    store.refresh()
    question = next(q for q in manifest.questions if "allowance" in q.question)
    hits = await store.search(question.question, k=3)
    assert question.supports[0] in [h.passage.id for h in hits]
