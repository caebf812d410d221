"""The evidence store: a folder's passages kept in SQLite, refreshed incrementally by
content hash, searched by BM25 (and, given an embedding function, by BM25 and cosine
similarity fused by reciprocal rank), and read back by passage ID with neighbours, so
every citation a workflow writes can be resolved to the text it names.

Example:
    >>> import asyncio, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.md").write_text("The lighthouse was built in 1874.\\n\\nIt is white.\\n")
    >>> store = EvidenceStore(folder, path=folder / "index.sqlite")
    >>> store.refresh().ingested
    1
    >>> [hit.passage.id for hit in asyncio.run(store.search("lighthouse built"))]
    ['a.md#L1']
    >>> [p.id for p in store.read("a.md#L1")]
    ['a.md#L1', 'a.md#L3']
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from concilium._errors import UserError

from ._builtin import MAX_RESULT_CHARS, Embedder, bm25_ranker
from ._ingest import Passage, content_hash, document_passages, read_documents
from ._registry import Tool, ToolError
from ._tool_text import ToolText

RRF_K = 60
_log = logging.getLogger("concilium.tools")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages (
    id TEXT PRIMARY KEY, document TEXT NOT NULL, location TEXT NOT NULL,
    text TEXT NOT NULL, hash TEXT NOT NULL, idx INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS passages_document ON passages (document, idx);
CREATE TABLE IF NOT EXISTS embeddings (hash TEXT PRIMARY KEY, vector TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Hit:
    """A search result: the passage and its score (BM25, or fused rank score)."""

    passage: Passage
    score: float


@dataclass
class RefreshReport:
    """What a refresh changed: documents ingested (new or changed), removed, left
    unchanged, and notes on files skipped."""

    ingested: int = 0
    removed: int = 0
    unchanged: int = 0
    notes: list[str] = field(default_factory=list[str])


def default_index_path(folder: str | Path) -> Path:
    """``~/.cache/concilium/evidence/<hash of the folder's resolved path>.sqlite``."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:20]
    return Path.home() / ".cache" / "concilium" / "evidence" / f"{key}.sqlite"


class EvidenceStore:
    """Passages of a folder's documents, persisted, searchable and readable by ID.

    Args:
        folder: the documents' folder (only regular files inside it are read).
        path: the SQLite file; by default :func:`default_index_path` of ``folder``.
        embed: an async embedding function; with it, search is hybrid.
        k: passages a search returns by default.
        lexical_fallback: when the embedding function fails (a ``ToolError``: the
            server is unreachable or serves no embedding model), search by BM25
            alone, with a note, instead of failing.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        path: str | Path | None = None,
        embed: Embedder | None = None,
        k: int = 5,
        lexical_fallback: bool = False,
    ):
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else default_index_path(folder)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embed = embed
        self.lexical_fallback = lexical_fallback
        self.k = k
        self.notes: list[str] = []
        # one connection, used from the event loop's thread (the tools are async);
        # not tied to its creating thread so a store may be built in a worker thread
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._passages: list[Passage] | None = None
        self._rank: Callable[[str, int], list[tuple[int, float]]] | None = None

    def close(self) -> None:
        """Close the SQLite connection."""
        self._db.close()

    def refresh(self) -> RefreshReport:
        """Bring the index up to date with the folder: documents whose content hash
        changed (or new ones) are ingested again, deleted ones removed."""
        report = RefreshReport()
        known = dict(self._db.execute("SELECT name, hash FROM documents").fetchall())
        seen: set[str] = set()
        with self._db:
            for name, data in read_documents(self.folder, report.notes.append):
                seen.add(name)
                digest = content_hash(data)
                if known.get(name) == digest:
                    report.unchanged += 1
                    continue
                passages = document_passages(name, data, report.notes.append)
                self._db.execute("DELETE FROM passages WHERE document = ?", (name,))
                self._db.executemany(
                    "INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?)",
                    [(p.id, p.document, p.location, p.text, p.hash, p.index) for p in passages],
                )
                self._db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?)", (name, digest))
                report.ingested += 1
            for name in set(known) - seen:
                self._db.execute("DELETE FROM passages WHERE document = ?", (name,))
                self._db.execute("DELETE FROM documents WHERE name = ?", (name,))
                report.removed += 1
        self.notes = report.notes
        self._passages, self._rank = None, None
        return report

    def passages(self) -> list[Passage]:
        """Every passage, in document then position order."""
        if self._passages is None:
            rows = self._db.execute(
                "SELECT id, document, location, text, hash, idx FROM passages "
                "ORDER BY document, idx"
            ).fetchall()
            self._passages = [Passage(*row) for row in rows]
        return self._passages

    def _bm25(self, query: str, k: int) -> list[tuple[int, float]]:
        if self._rank is None:
            self._rank = bm25_ranker([p.text for p in self.passages()])
        return self._rank(query, k)

    async def _vectors(self, passages: list[Passage]) -> list[list[float]]:
        assert self.embed is not None
        cached = dict(self._db.execute("SELECT hash, vector FROM embeddings").fetchall())
        missing = sorted({p.hash for p in passages if p.hash not in cached})
        if missing:
            texts = {p.hash: p.text for p in passages}
            vectors = await self.embed([texts[h] for h in missing])
            if len(vectors) != len(missing):
                raise ToolError(
                    f"the embedding function gave {len(vectors)} vectors for {len(missing)} texts"
                )
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?, ?)",
                    [(h, json.dumps(v)) for h, v in zip(missing, vectors, strict=True)],
                )
            cached.update({h: json.dumps(v) for h, v in zip(missing, vectors, strict=True)})
        return [json.loads(cached[p.hash]) for p in passages]

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        """The ``k`` best passages for ``query``: BM25, or with an embedding function
        BM25 and cosine ranks fused by reciprocal rank (1 / (60 + rank), summed)."""
        if not query.strip():
            raise ToolError("search: the query is empty; give a few words to look for")
        k = k or self.k
        passages = self.passages()
        if not passages:
            return []
        lexical = self._bm25(query, len(passages) if self.embed else k)
        if self.embed is None:
            return [Hit(passages[i], score) for i, score in lexical]
        try:
            vectors = await self._vectors(passages)
            (question,) = await self.embed([query])
        except ToolError as exc:
            if not self.lexical_fallback:
                raise
            note = f"hybrid search fell back to BM25: {exc}"
            if note not in self.notes:
                self.notes.append(note)
                _log.warning("document folder %s: %s", self.folder, note)
            return [Hit(passages[i], score) for i, score in lexical[:k]]
        cosine = sorted(range(len(passages)), key=lambda i: (-_cosine(question, vectors[i]), i))
        fused: dict[int, float] = {}
        for ranking in ([i for i, _ in lexical], cosine):
            for rank, i in enumerate(ranking, start=1):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        return [Hit(passages[i], fused[i]) for i in best]

    def read(self, passage_id: str, neighbours: int = 1) -> list[Passage]:
        """The passage ``passage_id`` with up to ``neighbours`` passages either side
        from the same document, in order."""
        row = self._db.execute(
            "SELECT document, idx FROM passages WHERE id = ?", (passage_id,)
        ).fetchone()
        if row is None:
            raise ToolError(
                f"read: no passage has the ID {passage_id!r}; use an ID exactly as search "
                "returned it (document#location, e.g. 'handbook.md#L3-4')"
            )
        rows = self._db.execute(
            "SELECT id, document, location, text, hash, idx FROM passages "
            "WHERE document = ? AND idx BETWEEN ? AND ? ORDER BY idx",
            (row[0], row[1] - max(neighbours, 0), row[1] + max(neighbours, 0)),
        ).fetchall()
        return [Passage(*r) for r in rows]

    async def search_text(self, query: str) -> ToolText:
        """Search the local documents; returns the best passages, each as ``[ID] text``."""
        hits = await self.search(query)
        value = [{**asdict(h.passage), "score": h.score} for h in hits]
        if not hits:
            return ToolText(f"no passage matches {query!r}", value)
        text = "\n".join(f"[{h.passage.id}] {h.passage.text}" for h in hits)
        return ToolText(_bounded(text), value)

    async def read_text(self, passage_id: str) -> ToolText:
        """Read a passage by its ID (as search gave it), with the passages around it."""
        window = self.read(passage_id)
        text = "\n".join(f"[{p.id}] {p.text}" for p in window)
        return ToolText(_bounded(text), [asdict(p) for p in window])

    def tools(self) -> list[Tool]:
        """``search`` and ``read`` as tools agents can call; passages come back as
        ``[ID] text`` lines, the ID to cite, in a ``ToolText`` whose value is the
        passages themselves (``Passage`` fields as a dict, ``score`` too for a search),
        so code reads the IDs without parsing the text (which is cut at
        ``MAX_RESULT_CHARS``; the value is not). Each tool's ``fn`` is a method of this
        store, so a pattern given the tools can reach the store (``tool.fn.__self__``)."""
        return [
            Tool.from_function(self.search_text, name="search", timeout=30.0),
            Tool.from_function(self.read_text, name="read", timeout=10.0),
        ]


def evidence_tools(
    folder: str | Path,
    *,
    embed: Embedder | None = None,
    path: str | Path | None = None,
    k: int = 3,
) -> EvidenceStore:
    """The evidence store of a workflow's ``tools: documents:`` folder, refreshed.

    The index is kept at ``path`` (by default :func:`default_index_path`); when that
    file cannot be written (a read-only cache, or another process holding the write
    lock past SQLite's timeout) the folder is indexed in memory instead, with a note.
    Files skipped while reading (links out of the folder, FIFOs, devices, binary or
    oversized files) are in ``notes`` and logged as warnings on ``concilium.tools``.

    Raises:
        UserError: the folder has no passage to search.
    """
    try:
        store = EvidenceStore(folder, path=path, embed=embed, k=k)
        report = store.refresh()
    except sqlite3.OperationalError as exc:
        store = EvidenceStore(folder, path=":memory:", embed=embed, k=k)
        report = store.refresh()
        report.notes.append(f"the index file could not be used ({exc}); indexed in memory")
    for note in report.notes:
        _log.warning("document folder %s: %s", folder, note)
    store.notes = report.notes
    if not store.passages():
        store.close()
        raise UserError(
            f"document folder {str(folder)!r} has no text to search (.txt, .md, .html, .pdf "
            f"or .docx)" + (f" ({'; '.join(report.notes[:3])})" if report.notes else "")
        )
    return store


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 3] + "..."


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
