"""The citation pass: only IDs of passages in the store survive, renumbered."""

from __future__ import annotations

import re
from pathlib import Path

from concilium.graphs.patterns import resolve_citations
from concilium.tools.evidence import EvidenceStore

CORPUS = Path(__file__).resolve().parents[3] / "examples" / "research_corpus"


def _store(tmp_path: Path) -> EvidenceStore:
    store = EvidenceStore(CORPUS, path=tmp_path / "index.sqlite")
    store.refresh()
    return store


def test_invented_ids_never_reach_the_output(tmp_path: Path) -> None:
    store = _store(tmp_path)
    real = [p.id for p in store.passages()[:3]]
    invented = ["handbook.md#L999-1000", "ghost.pdf#p7", "12", "made-up.docx#P3"]
    draft = (
        f"Alpha [{real[0]}] and [{invented[0]}].\n"
        f"Beta [{invented[1]}; {real[1]}] then [{invented[2]}].\n"
        f"Gamma [{real[0]}, {invented[3]}, {real[2]}]. A [note in words] stays."
    )
    out = resolve_citations(draft, store.passages())
    for fake in invented:
        assert fake not in out.text
        assert fake not in out.sources_markdown()
    assert out.fabricated == invented
    assert out.kept == 4
    assert [s.passage_id for s in out.sources] == [real[0], real[1], real[2]]
    assert re.findall(r"\[(\d+)\]", out.text) == ["1", "2", "1", "3"]
    assert "[note in words]" in out.text
    known = {p.id for p in store.passages()}
    assert all(s.passage_id in known for s in out.sources)
    store.close()


def test_sources_list_names_file_and_location(tmp_path: Path) -> None:
    store = _store(tmp_path)
    by_kind = {}
    for p in store.passages():
        by_kind.setdefault(p.location[0], p)
    draft = " ".join(f"x [{p.id}]." for p in by_kind.values())
    out = resolve_citations(draft, store.passages())
    lines = out.sources_markdown().splitlines()[2:]
    assert len(lines) == len(by_kind)
    words = {"L": "line", "p": "page ", "P": "paragraph "}
    for line, p in zip(lines, by_kind.values(), strict=True):
        assert line.startswith(f"{lines.index(line) + 1}. {p.document}, ")
        assert words[p.location[0]] in line
    store.close()


def test_draft_without_citations_is_unchanged() -> None:
    out = resolve_citations("Nothing cited [see below].", [])
    assert out.text == "Nothing cited [see below]."
    assert out.sources == [] and out.fabricated == []
    assert out.sources_markdown().endswith("(none)")
