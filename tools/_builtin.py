"""Built-in tools: a calculator over the safe arithmetic evaluator (never ``eval``), and
what the evidence store's ``search`` and ``read`` over a folder of documents build on
(``_evidence``): the folder's reading guards and a BM25 ranker (bm25s), so research
workflows work offline. Both bound their work: the calculator sizes each step before
computing it, and the folder is read only as regular files inside it, within size
limits.

Example:
    >>> import asyncio
    >>> asyncio.run(CALCULATOR({"expression": "(3 + 4) * 2"}))
    '14'
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from ._arithmetic import NotArithmetic, evaluate, format_number
from ._registry import Tool, ToolError, ToolRegistry


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
MAX_PASSAGE_CHARS = 2_000
"""A longer paragraph is split into passages of at most this many characters."""
MAX_RESULT_CHARS = 8_000
MAX_QUERY_CHARS = 1_000
SUFFIXES = (".txt", ".md")
Embedder = Callable[[list[str]], Awaitable[list[list[float]]]]
"""An async function from texts to their embedding vectors (one per text, in order)."""


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
