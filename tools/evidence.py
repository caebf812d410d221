"""The evidence store: a folder's documents (.txt, .md, .html, .pdf, .docx) as
passages with stable IDs (``handbook.md#L3-4``, ``report.pdf#p2``), kept in SQLite,
searched by BM25 (fused with embeddings when given an ``Embedder``) and read back by
ID, so every citation a workflow writes resolves to the text it names. Also the
synthetic test organisation of ``examples/research_corpus`` (``write_corpus``).

Example:
    >>> import asyncio, tempfile
    >>> from pathlib import Path
    >>> from concilium.tools.evidence import EvidenceStore
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.md").write_text("The lighthouse was built in 1874.\\n")
    >>> store = EvidenceStore(folder, path=folder / "index.sqlite")
    >>> store.refresh().ingested
    1
    >>> [hit.passage.id for hit in asyncio.run(store.search("lighthouse"))]
    ['a.md#L1']
"""

from ._builtin import Embedder
from ._corpus import CorpusQuestion, write_corpus
from ._embeddings import openai_embedder
from ._evidence import EvidenceStore, default_index_path
from ._ingest import Passage

__all__ = [
    "EvidenceStore",
    "Passage",
    "default_index_path",
    "Embedder",
    "openai_embedder",
    "write_corpus",
    "CorpusQuestion",
]
