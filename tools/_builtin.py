"""Built-in tools: a calculator over the safe arithmetic evaluator (never ``eval``), and
BM25 search over a folder of text files (bm25s), so research workflows work offline.
Both bound their work: the calculator sizes each step before computing it, and the
search reads only regular files inside its folder, within size limits.

Example:
    >>> import asyncio
    >>> asyncio.run(CALCULATOR({"expression": "(3 + 4) * 2"}))
    '14'
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from concilium._errors import UserError

from ._arithmetic import NotArithmetic, evaluate, format_number
from ._registry import Tool, ToolError, ToolRegistry
from ._tool_text import ToolText


def calculator(expression: str) -> str:
    """Evaluate plain arithmetic: numbers, + - * / // % **, parentheses. Example: "(12 * 7) / 4"."""
    try:
        return format_number(evaluate(expression))
    except NotArithmetic as exc:
        raise ToolError(
            f"calculator: {exc}; give plain arithmetic such as '(12 * 7) / 4'"
        ) from None


# Each step's size is bounded before it is computed (see _arithmetic), so a call is
# microseconds of work: a worker thread suffices and the event loop is never held.
CALCULATOR = Tool.from_function(calculator, timeout=5.0)


MAX_FILE_BYTES = 10_000_000
"""A file over this size is skipped (with a note)."""
MAX_TOTAL_BYTES = 50_000_000
"""Files past this total are skipped (with a note): indexing is done in memory."""
MAX_FILES = 10_000
MAX_PASSAGES = 100_000
MAX_PASSAGE_CHARS = 2_000
"""A longer paragraph is split into passages of at most this many characters."""
MAX_RESULT_CHARS = 8_000
MAX_QUERY_CHARS = 1_000
SUFFIXES = (".txt", ".md")
_PARAGRAPH = re.compile(r"\n\s*\n")
_log = logging.getLogger("concilium.tools")
Embedder = Callable[[list[str]], Awaitable[list[list[float]]]]
"""An async function from texts to their embedding vectors (one per text, in order)."""


class DocumentSearch:
    """BM25 over the ``.txt`` and ``.md`` files of a folder, one passage per paragraph.

    The folder is read defensively, as it may come from someone else: only regular
    files are opened (a FIFO, device or socket is skipped without being opened, so it
    cannot hang or flood the reader), links are followed only to files inside the
    folder and links to folders not at all, a file over ``MAX_FILE_BYTES`` or past
    ``MAX_TOTAL_BYTES`` in all is skipped, a file with NUL bytes is skipped as binary,
    and a file that is not UTF-8 is read with its bad bytes replaced. Each of these
    is a line in ``notes`` (also logged as a warning on ``concilium.tools``). A
    paragraph longer than ``MAX_PASSAGE_CHARS`` is split into passages of at most
    that length, and a search returns at most ``MAX_RESULT_CHARS`` characters (a
    ``ToolText`` whose value holds the hits whole: ``source``, ``text``, ``score``).

    Args:
        folder: where the files are (read once, at construction).
        k: passages returned per query.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.txt").write_text("The lighthouse was built in 1874.")
        >>> _ = (folder / "b.txt").write_bytes(b"caf\\xe9 au lait")  # latin-1, not UTF-8
        >>> search = DocumentSearch(folder)
        >>> search.search("lighthouse built")
        '[a.txt] The lighthouse was built in 1874.'
        >>> search.notes
        ['b.txt: not UTF-8 (a bad byte at offset 3); read with the undecodable bytes replaced']
    """

    def __init__(self, folder: str | Path, *, k: int = 3):
        import bm25s

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(
                f"document folder {str(folder)!r} does not exist; give a folder of .txt or .md files"
            )
        self.notes: list[str] = []
        self.passages: list[tuple[str, str]] = []
        root = self.folder.resolve()
        left = MAX_TOTAL_BYTES
        for path in _candidates(root, self._note):
            name = path.relative_to(root).as_posix()
            data = _read_regular_file(path, root, name, left, self._note)
            if data is None:
                continue
            left -= len(data)
            text = self._decoded(name, data)
            if text is not None and not self._add(name, text):
                break
        if not self.passages:
            raise UserError(
                f"document folder {str(folder)!r} has no .txt or .md text to search"
                + (f" ({'; '.join(self.notes[:3])})" if self.notes else "")
            )
        self.k = min(k, len(self.passages))
        self._bm25s = bm25s
        self._index = bm25s.BM25()
        self._index.index(self._tokens([text for _, text in self.passages]), show_progress=False)

    def _note(self, note: str) -> None:
        self.notes.append(note)
        _log.warning("document folder %s: %s", self.folder, note)

    def _decoded(self, name: str, data: bytes) -> str | None:
        if b"\x00" in data:
            self._note(f"{name}: skipped, it looks binary (it has NUL bytes)")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self._note(
                f"{name}: not UTF-8 (a bad byte at offset {exc.start}); "
                "read with the undecodable bytes replaced"
            )
            return data.decode("utf-8-sig", errors="replace")

    def _add(self, name: str, text: str) -> bool:
        """Add a file's passages; False once ``MAX_PASSAGES`` is reached."""
        for passage in _passages(text):
            if len(self.passages) >= MAX_PASSAGES:
                self._note(f"{name}: the folder's limit of {MAX_PASSAGES:,} passages is reached; "
                           "the rest of the files are not searched")  # fmt: skip
                return False
            self.passages.append((name, passage))
        return True

    def _tokens(self, texts: list[str]) -> Any:
        return self._bm25s.tokenize(texts, stopwords="en", show_progress=False)

    def search(self, query: str) -> ToolText:
        """Search the local documents; returns the best passages with their file names."""
        if not query.strip():
            raise ToolError("search: the query is empty")
        query = query[:MAX_QUERY_CHARS]
        ids, scores = self._index.retrieve(self._tokens([query]), k=self.k, show_progress=False)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
        # the value: each hit's file, passage and score, whole (the text may be cut)
        value = [{"source": self.passages[i][0], "text": self.passages[i][1], "score": s}
                 for i, s in hits]  # fmt: skip
        if not hits:
            return ToolText(f"no passage matches {query!r}", value)
        found = "\n".join(f"[{self.passages[i][0]}] {self.passages[i][1]}" for i, _ in hits)
        if len(found) > MAX_RESULT_CHARS:
            found = found[: MAX_RESULT_CHARS - 3] + "..."
        return ToolText(found, value)

    def tool(self, name: str = "search") -> Tool:
        return Tool.from_function(self.search, name=name, timeout=10.0)


def _candidates(
    root: Path, note: Callable[[str], None], suffixes: tuple[str, ...] = SUFFIXES
) -> Iterator[Path]:
    """The entries under ``root`` ending in ``suffixes`` in a stable order; links to
    folders are not followed (a folder could link back to itself or out of ``root``)."""
    count = 0

    def unreadable(exc: OSError) -> None:
        note(f"{exc.filename}: skipped, {exc.strerror or exc}")

    for here, folders, files in os.walk(root, onerror=unreadable, followlinks=False):
        base = Path(here)
        for folder in sorted(folders):
            if (base / folder).is_symlink():
                note(f"{(base / folder).relative_to(root).as_posix()}: skipped, a link to a folder")
        folders[:] = sorted(f for f in folders if not (base / f).is_symlink())
        for file in sorted(files):
            if not file.endswith(suffixes):
                continue
            count += 1
            if count > MAX_FILES:
                note(f"more than {MAX_FILES:,} files; the rest are not searched")
                return
            yield base / file


def _read_regular_file(
    path: Path, root: Path, name: str, left: int, note: Callable[[str], None]
) -> bytes | None:
    """The bytes of ``path`` if it is (or links to) a regular file inside ``root`` and
    within the size limits; otherwise None and a note. It is checked with ``stat``
    before it is opened, and opened without following a link and without blocking, so
    a FIFO or device is never read."""
    target = path
    if path.is_symlink():
        try:
            target = path.resolve()
        except RuntimeError:  # pathlib's "Symlink loop" (a link to itself, or a cycle)
            note(f"{name}: skipped, a link that loops back to itself")
            return None
        if not target.is_relative_to(root):
            note(f"{name}: skipped, a link to {target}, outside the folder")
            return None
    try:
        info = os.stat(target, follow_symlinks=False)
    except OSError as exc:
        note(f"{name}: skipped, {exc.strerror or exc}")
        return None
    if not stat.S_ISREG(info.st_mode):
        note(f"{name}: skipped, not a regular file (a folder, FIFO, device or socket)")
        return None
    if info.st_size > min(MAX_FILE_BYTES, left):
        limit = (
            f"the limit of {MAX_FILE_BYTES:,} bytes per file"
            if info.st_size > MAX_FILE_BYTES
            else f"the {left:,} bytes left of the folder's limit of {MAX_TOTAL_BYTES:,}"
        )
        note(f"{name}: skipped, {info.st_size:,} bytes is over {limit}")
        return None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        note(f"{name}: skipped, {exc.strerror or exc}")
        return None
    with open(fd, "rb", closefd=True) as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the check above
            note(f"{name}: skipped, not a regular file")
            return None
        data = file.read(min(MAX_FILE_BYTES, left) + 1)
    if len(data) > min(MAX_FILE_BYTES, left):  # it grew since the check above
        note(f"{name}: skipped, it grew past the size limit while being read")
        return None
    return data


def _passages(text: str) -> Iterator[str]:
    """Paragraphs (split at blank lines) with whitespace collapsed; a paragraph longer
    than ``MAX_PASSAGE_CHARS`` becomes several passages cut between words."""
    for block in _PARAGRAPH.split(text):
        words = block.split()
        chunk: list[str] = []
        size = 0
        for word in words:
            while len(word) > MAX_PASSAGE_CHARS:  # one "word" longer than a passage
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


def bm25_ranker(texts: list[str]) -> Callable[[str, int], list[tuple[int, float]]]:
    """A BM25 index over ``texts`` (bm25s, English stopwords): the returned function
    gives the ``k`` best (index, score) pairs for a query, best first, score > 0."""
    import bm25s

    def tokens(batch: list[str]) -> Any:
        return bm25s.tokenize(batch, stopwords="en", show_progress=False)

    index = bm25s.BM25()
    try:
        index.index(tokens(texts), show_progress=False)
    except ValueError:  # bm25s refuses a corpus with no words left after stopwords
        return lambda query, k: []

    def rank(query: str, k: int) -> list[tuple[int, float]]:
        k = min(k, len(texts))
        if k <= 0:
            return []
        try:
            ids, scores = index.retrieve(
                tokens([query[:MAX_QUERY_CHARS]]), k=k, show_progress=False
            )
        except ValueError:  # a query of stopwords only
            return []
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    return rank


def builtin_tools(
    documents: str | Path | None = None, *, embed: Embedder | None = None
) -> ToolRegistry:
    """The calculator and, when a ``documents`` folder is given, ``search`` and ``read``
    over its evidence store (passages with IDs; BM25, hybrid with ``embed``).

    Example:
        >>> builtin_tools().names()
        ['calculator']
    """
    registry = ToolRegistry([CALCULATOR])
    if documents is not None:
        # the store builds on this module's reading guards, so it is imported here
        from ._evidence import evidence_tools

        for tool in evidence_tools(documents, embed=embed).tools():
            registry.add(tool)
    return registry
