"""Ingestion: every format with its locations, stable IDs, and the folder's guards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from concilium.tools._corpus import docx_bytes, pdf_bytes
from concilium.tools._ingest import ingest_folder


def _ids(folder: Path) -> dict[str, str]:
    return {p.id: p.text for p in ingest_folder(folder).passages}


def test_every_format_with_its_locations(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("alpha line\n\nbeta one\nbeta two\n")
    (tmp_path / "guide.md").write_text("# Guide\n\n\n\nThe VPN comes first.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><script>steal()</script><style>p{}</style></head>\n<body>\n"
        "<p>Price is\nEUR 12.</p>\n<p>Second</p></body></html>\n"
    )
    (tmp_path / "report.pdf").write_bytes(
        pdf_bytes([["Cover page"], ["Revenue was EUR 9 million."]])
    )
    (tmp_path / "memo.docx").write_bytes(docx_bytes(["Opening.", "", "Budget is EUR 4 million."]))
    ids = _ids(tmp_path)
    assert ids["notes.txt#L1"] == "alpha line"
    assert ids["notes.txt#L3-4"] == "beta one beta two"
    assert ids["guide.md#L5"] == "The VPN comes first."
    assert ids["page.html#L3-4"] == "Price is EUR 12."
    assert ids["page.html#L5"] == "Second"
    assert "steal" not in " ".join(ids.values()) and "p{}" not in " ".join(ids.values())
    assert ids["report.pdf#p1"] == "Cover page"
    assert ids["report.pdf#p2"] == "Revenue was EUR 9 million."
    assert ids["memo.docx#P1"] == "Opening."
    assert ids["memo.docx#P3"] == "Budget is EUR 4 million."
    assert "memo.docx#P2" not in ids  # an empty paragraph is no passage, numbering kept


def test_ids_are_stable_and_hashes_follow_text(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("one\n\ntwo\n")
    first = ingest_folder(tmp_path)
    second = ingest_folder(tmp_path)
    assert [(p.id, p.hash) for p in first.passages] == [(p.id, p.hash) for p in second.passages]
    assert first.documents == second.documents
    (tmp_path / "a.md").write_text("one\n\nthree\n")
    third = ingest_folder(tmp_path)
    assert third.documents["a.md"] != first.documents["a.md"]
    assert third.passages[0].hash == first.passages[0].hash
    assert third.passages[1].hash != first.passages[1].hash


def test_long_paragraph_is_cut_into_bounded_passages(tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text(" ".join(["word"] * 1500))
    passages = ingest_folder(tmp_path).passages
    assert [p.location for p in passages] == ["L1.1", "L1.2", "L1.3", "L1.4"]
    assert all(len(p.text) <= 2000 for p in passages)


def test_document_text_comes_back_verbatim_never_run(tmp_path: Path) -> None:
    hostile = "{{ 7 * 7 }} {% for x in y %} __import__('os').system('touch pwned') ${HOME}"
    (tmp_path / "t.md").write_text(hostile + "\n")
    assert _ids(tmp_path) == {"t.md#L1": hostile}
    assert not (tmp_path / "pwned").exists()


def test_bad_files_are_notes_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("fine\n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02" * 10)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "broken.docx").write_bytes(b"PK not a zip")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "huge.txt").write_bytes(b"a" * 10_000_001)
    report = ingest_folder(tmp_path)
    notes = "\n".join(report.notes)
    assert "binary.txt: skipped, binary" in notes
    assert "broken.pdf: skipped, not a readable PDF" in notes
    assert "broken.docx: skipped, not a readable DOCX" in notes
    assert "latin.txt: not UTF-8" in notes
    assert "huge.txt: skipped" in notes
    assert "image.png" not in notes  # unknown kinds are not candidates at all
    assert {p.document for p in report.passages} == {"ok.md", "latin.txt"}


def test_encrypted_pdf_is_a_note(tmp_path: Path) -> None:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes([["secret"]]))))
    writer.encrypt("pw")
    buffer = io.BytesIO()
    writer.write(buffer)
    (tmp_path / "locked.pdf").write_bytes(buffer.getvalue())
    report = ingest_folder(tmp_path)
    assert report.passages == []
    assert any("locked.pdf: skipped" in n for n in report.notes)


def test_links_out_of_the_folder_and_fifos_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "docs", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "key.md").write_text("private key\n")
    (root / "in.md").write_text("inside\n")
    (root / "escape.md").symlink_to(outside / "key.md")
    (root / "folder").symlink_to(outside)
    (root / "inner.md").symlink_to(root / "in.md")
    os.mkfifo(root / "pipe.md")
    report = ingest_folder(root)
    texts = " ".join(p.text for p in report.passages)
    assert "private key" not in texts
    assert {p.document for p in report.passages} == {"in.md", "inner.md"}
    notes = "\n".join(report.notes)
    assert "escape.md: skipped, a link to" in notes and "outside the folder" in notes
    assert "folder: skipped, a link to a folder" in notes
    assert "pipe.md: skipped, not a regular file" in notes


def test_a_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    from concilium._errors import UserError

    with pytest.raises(UserError, match="not a folder"):
        ingest_folder(tmp_path / "nope")
