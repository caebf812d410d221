"""Document search over a hostile folder, and a workflow's documents: kept inside its folder."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from concilium import UserError
from concilium.tools import ToolError
from concilium.tools._builtin import DocumentSearch

ROOT = Path(__file__).resolve().parents[2]
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


def built_within_a_deadline(folder: Path) -> DocumentSearch:
    """DocumentSearch(folder) in a thread; if it blocks on the FIFO, unblock it and fail."""
    out: list[DocumentSearch | BaseException] = []

    def build() -> None:
        try:
            out.append(DocumentSearch(folder, k=5))
        except BaseException as exc:  # reported below
            out.append(exc)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # a reader is blocked on the FIFO: give it a writer, then fail
        os.close(os.open(folder / "pipe.txt", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading the folder blocked (the FIFO was opened for reading)")
    assert len(out) == 1 and isinstance(out[0], DocumentSearch), out
    return out[0]


def test_a_hostile_folder_is_read_without_hanging_leaking_or_crashing(tmp_path: Path) -> None:
    search = built_within_a_deadline(hostile_folder(tmp_path))
    names = {name for name, _ in search.passages}
    assert names == {"good.txt", "inside.md", "latin1.txt"}
    assert all(SECRET not in text for _, text in search.passages)
    notes = "\n".join(search.notes)
    assert "secret.txt: skipped, a link to" in notes and "outside the folder" in notes
    assert "linked: skipped, a link to a folder" in notes
    assert "zero.txt: skipped, a link to /dev/zero, outside the folder" in notes
    assert "pipe.txt: skipped, not a regular file" in notes
    assert "binary.txt: skipped, it looks binary" in notes
    assert "latin1.txt: not UTF-8 (a bad byte at offset 3); read with the undecodable" in notes
    assert "huge.txt: skipped, 100,000,000 bytes is over the limit of 10,000,000 bytes" in notes
    assert "folder.txt" not in notes  # a folder is walked as a folder, never opened as a file
    hits = search.search("secret launch code lighthouse")
    assert SECRET not in hits and "[good.txt] The lighthouse was built in 1874." in hits
    assert "caf\ufffd near the lighthouse keeper" in search.search("keeper")


def test_a_huge_paragraph_becomes_bounded_passages_and_results(tmp_path: Path) -> None:
    word = "lighthouse "
    (tmp_path / "long.txt").write_text(word * 300_000)  # 3.3 MB, one paragraph
    (tmp_path / "word.txt").write_text("x" * 5_000)  # one "word" longer than a passage
    search = DocumentSearch(tmp_path, k=10)
    lengths = [len(text) for _, text in search.passages]
    assert max(lengths) <= 2_000 and sum(lengths) >= len(word) * 300_000 - len(search.passages)
    assert [len(t) for n, t in search.passages if n == "word.txt"] == [2_000, 2_000, 1_000]
    result = search.search("lighthouse")
    assert len(result) <= 8_000 and result.startswith("[long.txt] lighthouse")


def test_a_folder_with_nothing_readable_says_why(tmp_path: Path) -> None:
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match=r"no \.txt or \.md text to search.*binary\.txt: skipped"):
        DocumentSearch(tmp_path)
    (tmp_path / "ok.txt").write_text("words")
    with pytest.raises(ToolError, match="the query is empty"):
        DocumentSearch(tmp_path).search("  ")
