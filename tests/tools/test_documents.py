"""The evidence store over a hostile folder: read without hanging, leaking or crashing,
its passages and results bounded, and a folder with nothing to search said so."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from concilium import UserError
from concilium.tools import ToolError
from concilium.tools._evidence import EvidenceStore, evidence_tools

SECRET = "the launch code is 0000"


def hostile_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("The lighthouse was built in 1874.\n\nCats sleep a lot.")
    (docs / "secret.txt").symlink_to(outside / "secret.txt")
    (docs / "linked").symlink_to(outside, target_is_directory=True)
    (docs / "zero.txt").symlink_to("/dev/zero")
    (docs / "inside.md").symlink_to(docs / "good.txt")
    os.mkfifo(docs / "pipe.txt")
    (docs / "binary.txt").write_bytes(b"lighthouse\x00\x01\x02\xff")
    (docs / "latin1.txt").write_bytes("caf\xe9 near the lighthouse keeper".encode("latin-1"))
    (docs / "folder.txt").mkdir()
    with (docs / "huge.txt").open("wb") as f:  # sparse: 100 MB on paper, nothing on disk
        f.truncate(100_000_000)
    return docs


def built_within_a_deadline(folder: Path) -> EvidenceStore:
    """The store of ``folder``, built in a thread; if it blocks on the FIFO, unblock it and fail."""
    out: list[EvidenceStore | BaseException] = []

    def build() -> None:
        try:
            out.append(evidence_tools(folder, path=":memory:", k=5))
        except BaseException as exc:  # reported below
            out.append(exc)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # a reader is blocked on the FIFO: give it a writer, then fail
        os.close(os.open(folder / "pipe.txt", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading the folder blocked (the FIFO was opened for reading)")
    assert len(out) == 1 and isinstance(out[0], EvidenceStore), out
    return out[0]


async def test_a_hostile_folder_is_read_without_hanging_leaking_or_crashing(tmp_path: Path) -> None:
    store = built_within_a_deadline(hostile_folder(tmp_path))
    passages = store.passages()
    assert {p.document for p in passages} == {"good.txt", "inside.md", "latin1.txt"}
    assert all(SECRET not in p.text for p in passages)
    notes = "\n".join(store.notes)
    assert "secret.txt: skipped, a link to" in notes and "outside the folder" in notes
    assert "linked: skipped, a link to a folder" in notes
    assert "zero.txt: skipped, a link to /dev/zero, outside the folder" in notes
    assert "pipe.txt: skipped, not a regular file" in notes
    assert "binary.txt: skipped, binary" in notes
    assert "latin1.txt: not UTF-8" in notes
    assert "huge.txt: skipped, 100,000,000 bytes is over the limit of 10,000,000 bytes" in notes
    assert "folder.txt" not in notes  # a folder is walked as a folder, never opened as a file
    search = {t.name: t for t in store.tools()}["search"]
    hits = await search({"query": "secret launch code lighthouse"})
    assert SECRET not in hits and "[good.txt#L1] The lighthouse was built in 1874." in hits
    assert "caf\ufffd near the lighthouse keeper" in await search({"query": "keeper"})


async def test_a_huge_paragraph_becomes_bounded_passages_and_results(tmp_path: Path) -> None:
    word = "lighthouse "
    (tmp_path / "long.txt").write_text(word * 300_000)  # 3.3 MB, one paragraph
    (tmp_path / "word.txt").write_text("x" * 5_000)  # one "word" longer than a passage
    store = evidence_tools(tmp_path, path=":memory:", k=10)
    passages = store.passages()
    lengths = [len(p.text) for p in passages]
    assert max(lengths) <= 2_000 and sum(lengths) >= len(word) * 300_000 - len(passages)
    assert [len(p.text) for p in passages if p.document == "word.txt"] == [2_000, 2_000, 1_000]
    result = await store.search_text("lighthouse")
    assert len(result) <= 8_000 and result.startswith("[long.txt#L1.")
    assert len(result.value) == 10  # the value holds every hit whole, past the text's cut


async def test_a_folder_with_nothing_readable_says_why(tmp_path: Path) -> None:
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match=r"has no text to search.*binary\.txt: skipped"):
        evidence_tools(tmp_path, path=":memory:")
    (tmp_path / "ok.txt").write_text("words")
    with pytest.raises(ToolError, match="the query is empty"):
        await evidence_tools(tmp_path, path=":memory:").search_text("  ")
