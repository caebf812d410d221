"""Built-in tools: a calculator over the safe arithmetic evaluator (never ``eval``), and
BM25 search over a folder of text files (bm25s), so research workflows work offline.

Example:
    >>> import asyncio
    >>> asyncio.run(CALCULATOR({"expression": "(3 + 4) * 2"}))
    '14'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from concilium._errors import UserError

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


class DocumentSearch:
    """BM25 over the ``.txt`` and ``.md`` files of a folder, one passage per paragraph.

    Args:
        folder: where the files are (read once, at construction).
        k: passages returned per query.
    """

    def __init__(self, folder: str | Path, *, k: int = 3):
        import bm25s

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(
                f"document folder {str(folder)!r} does not exist; give a folder of .txt or .md files"
            )
        self.passages: list[tuple[str, str]] = []
        for path in sorted(p for p in self.folder.rglob("*") if p.suffix in (".txt", ".md")):
            for block in path.read_text(encoding="utf-8").split("\n\n"):
                if block.strip():
                    self.passages.append((path.name, " ".join(block.split())))
        if not self.passages:
            raise UserError(f"document folder {str(folder)!r} has no .txt or .md text to search")
        self.k = min(k, len(self.passages))
        self._bm25s = bm25s
        self._index = bm25s.BM25()
        self._index.index(self._tokens([text for _, text in self.passages]), show_progress=False)

    def _tokens(self, texts: list[str]) -> Any:
        return self._bm25s.tokenize(texts, stopwords="en", show_progress=False)

    def search(self, query: str) -> str:
        """Search the local documents; returns the best passages with their file names."""
        if not query.strip():
            raise ToolError("search: the query is empty")
        ids, scores = self._index.retrieve(self._tokens([query]), k=self.k, show_progress=False)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
        if not hits:
            return f"no passage matches {query!r}"
        return "\n".join(f"[{self.passages[i][0]}] {self.passages[i][1]}" for i, _ in hits)

    def tool(self, name: str = "search") -> Tool:
        return Tool.from_function(self.search, name=name, timeout=10.0)


def builtin_tools(documents: str | Path | None = None) -> ToolRegistry:
    """The calculator, and ``search`` over ``documents`` when a folder is given."""
    registry = ToolRegistry([CALCULATOR])
    if documents is not None:
        registry.add(DocumentSearch(documents).tool())
    return registry
