"""Ingestion: a folder of documents becomes passages with stable IDs, each carrying its
document, its location (line span, page or paragraph) and a content hash, so a citation
can be checked against the text it names. Files are read only through the same guards
as document search (inside the folder, regular files, size limits); what cannot be read
is skipped with a note in the report, never a crash, and nothing read is executed.
PDF and DOCX are parsed in a child process under a memory cap (``concilium._capped``):
a file of a megabyte can decompress to gigabytes.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "handbook.md").write_text("# Leave\\n\\nStaff get 25 days.\\n")
    >>> [p.id for p in ingest_folder(folder).passages]
    ['handbook.md#L1', 'handbook.md#L3']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from concilium._capped import CappedError, capped_lines
from concilium._errors import UserError
from concilium._json import load_json

from ._builtin import MAX_PASSAGE_CHARS, MAX_TOTAL_BYTES, _candidates, _read_regular_file

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm")
INGEST_SUFFIXES = (*TEXT_SUFFIXES, *HTML_SUFFIXES, ".pdf", ".docx")
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "head"}
_BLOCK_TAGS = {
    "p",
    "div",
    "li",
    "tr",
    "td",
    "th",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "br",
    "table",
    "section",
    "article",
    "ul",
    "ol",
    "blockquote",
    "pre",
    "body",
    "main",
}


@dataclass(frozen=True)
class Passage:
    """One passage of one document.

    Attributes:
        id: stable ID, ``document#location`` (``a.md#L3-5``, ``b.pdf#p2``, ``c.docx#P4``).
        document: the file's path relative to the folder, with ``/``.
        location: ``L3-5`` (lines), ``p2`` (page 2; ``p2.1`` when a page is cut) or ``P4`` (paragraph).
        text: the passage's text, whitespace collapsed.
        hash: sha256 of ``text`` (hex, 16 characters).
        index: the passage's position in its document, from 0.
    """

    id: str
    document: str
    location: str
    text: str
    hash: str
    index: int


@dataclass
class IngestReport:
    """What one ingest read: passages, the documents' content hashes, and notes on
    every file skipped (binary, oversized, broken, outside the folder)."""

    passages: list[Passage] = field(default_factory=list[Passage])
    documents: dict[str, str] = field(default_factory=dict[str, str])
    notes: list[str] = field(default_factory=list[str])


def content_hash(data: bytes | str) -> str:
    """A short sha256 hex digest of bytes or text."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:16]


def _decode(name: str, data: bytes, note: Callable[[str], None]) -> str | None:
    if b"\x00" in data[:8192]:
        note(f"{name}: skipped, binary content")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        note(f"{name}: not UTF-8, read with replacement characters")
        return data.decode("utf-8", errors="replace")


def _line_blocks(text: str) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, text) of each paragraph; lines count from 1."""
    start: int | None = None
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if start is None:
                start = number
            lines.append(line)
            continue
        if start is not None:
            yield start, number - 1, "\n".join(lines)
            start, lines = None, []
    if start is not None:
        yield start, start + len(lines) - 1, "\n".join(lines)


def _pieces(text: str) -> Iterator[str]:
    """``text`` with whitespace collapsed, cut between words at ``MAX_PASSAGE_CHARS``."""
    chunk: list[str] = []
    size = 0
    for word in text.split():
        while len(word) > MAX_PASSAGE_CHARS:
            if chunk:
                yield " ".join(chunk)
                chunk, size = [], 0
            yield word[:MAX_PASSAGE_CHARS]
            word = word[MAX_PASSAGE_CHARS:]
        if chunk and size + 1 + len(word) > MAX_PASSAGE_CHARS:
            yield " ".join(chunk)
            chunk, size = [], 0
        if word:
            size += len(word) + (1 if chunk else 0)
            chunk.append(word)
    if chunk:
        yield " ".join(chunk)


def _lines_location(first: int, last: int, part: int, parts: int) -> str:
    span = f"L{first}" if first == last else f"L{first}-{last}"
    return span if parts == 1 else f"{span}.{part + 1}"


def _text_units(text: str) -> Iterator[tuple[str, str]]:
    for first, last, block in _line_blocks(text):
        pieces = list(_pieces(block))
        for part, piece in enumerate(pieces):
            yield _lines_location(first, last, part, len(pieces)), piece


class _HTMLText(HTMLParser):
    """Visible text of an HTML page as blocks (paragraphs, headings, list items...),
    each with the source lines it spans; scripts, styles and the head are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[int, int, str]] = []
        self._lines: list[int] = []
        self._words: list[str] = []
        self._skip = 0

    def flush(self) -> None:
        if self._words:
            self.blocks.append((min(self._lines), max(self._lines), " ".join(self._words)))
        self._lines, self._words = [], []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skip:
            self._skip -= 1
        elif tag in _BLOCK_TAGS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if self._skip or not data.strip():
            return
        line = self.getpos()[0]
        self._lines += [line, line + data.rstrip().count("\n")]
        self._words.append(" ".join(data.split()))


def _html_units(text: str) -> Iterator[tuple[str, str]]:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    parser.flush()
    for first, last, block in parser.blocks:
        pieces = list(_pieces(block))
        for part, piece in enumerate(pieces):
            yield _lines_location(first, last, part, len(pieces)), piece


def _capped_texts(kind: str, name: str, data: bytes, note: Callable[[str], None]) -> list[str]:
    """The pages (PDF) or paragraphs (DOCX) of ``data``, parsed in a child process under a
    memory cap (a small file can decompress to gigabytes); [] and a note if it fails."""
    try:
        return [load_json(line) for line in capped_lines(kind, data=data)]
    except (CappedError, ValueError) as exc:  # ValueError: a line cut at its bound
        note(f"{name}: skipped, {exc}")
        return []


def _numbered_units(prefix: str, texts: list[str]) -> Iterator[tuple[str, str]]:
    for number, text in enumerate(texts, start=1):
        pieces = list(_pieces(text))
        for part, piece in enumerate(pieces):
            where = f"{prefix}{number}" if len(pieces) == 1 else f"{prefix}{number}.{part + 1}"
            yield where, piece


def document_passages(name: str, data: bytes, note: Callable[[str], None]) -> list[Passage]:
    """The passages of one document named ``name`` (relative path) from its bytes."""
    suffix = Path(name).suffix.lower()
    units: Iterator[tuple[str, str]]
    if suffix == ".pdf":
        # PDF text carries no reliable paragraph breaks, so a page is one passage (cut
        # between words when it is longer than a passage may be)
        units = _numbered_units("p", _capped_texts("pdf", name, data, note))
    elif suffix == ".docx":
        units = _numbered_units("P", _capped_texts("docx", name, data, note))
    else:
        text = _decode(name, data, note)
        if text is None:
            return []
        units = _html_units(text) if suffix in HTML_SUFFIXES else _text_units(text)
    return [
        Passage(f"{name}#{where}", name, where, piece, content_hash(piece), index)
        for index, (where, piece) in enumerate(units)
    ]


def read_documents(folder: str | Path, note: Callable[[str], None]) -> Iterator[tuple[str, bytes]]:
    """(relative name, bytes) of each readable document under ``folder``."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise UserError(
            f"documents folder {str(folder)!r} is not a folder; give an existing folder"
        )
    left = MAX_TOTAL_BYTES
    for path in _candidates(root, note, INGEST_SUFFIXES):
        name = path.relative_to(root).as_posix()
        data = _read_regular_file(path, root, name, left, note)
        if data is not None:
            left -= len(data)
            yield name, data


def ingest_folder(folder: str | Path) -> IngestReport:
    """Read every supported document under ``folder`` into passages.

    Args:
        folder: the folder; only regular files inside it are read.

    Returns:
        The passages, each document's content hash, and notes on skipped files.
    """
    report = IngestReport()
    for name, data in read_documents(folder, report.notes.append):
        report.documents[name] = content_hash(data)
        report.passages.extend(document_passages(name, data, report.notes.append))
    return report
