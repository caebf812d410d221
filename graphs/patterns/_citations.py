"""The deterministic citation pass of the research workflow (issue 13).

A draft cites passages by their store IDs in brackets (``[handbook.md#L3-4]``,
several in one bracket separated by commas or semicolons). This pass keeps only
IDs that name a passage in the store, renumbers them ``[n]`` in order of first use
and writes the Sources list; every other citation-like bracket (an invented ID, a
bare number the model made up) is removed and counted. No model is asked, so a
fabricated citation cannot reach the output whatever the writer produced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from concilium.tools.evidence import Passage

_BRACKET = re.compile(r"\s?\[([^\[\]\n]{1,300})\](?!\()")
_SPLIT = re.compile(r"\s*[,;]\s*")


@dataclass(frozen=True)
class CitedSource:
    """One entry of the Sources list: ``number. document, location``."""

    number: int
    passage_id: str
    document: str
    location: str

    def line(self) -> str:
        """The Sources line, e.g. ``1. handbook.md, lines 3-4``."""
        return f"{self.number}. {self.document}, {describe_location(self.location)}"


@dataclass
class CitedText:
    """A draft after the citation pass.

    Attributes:
        text: the draft with citations renumbered ``[n]`` and unknown ones removed.
        sources: the cited passages, numbered in order of first use.
        fabricated: every removed citation, in order of appearance (repeats kept).
        kept: how many citations were kept (repeats counted).
    """

    text: str
    sources: list[CitedSource] = field(default_factory=list[CitedSource])
    fabricated: list[str] = field(default_factory=list[str])
    kept: int = 0

    def cite(self, passage: Passage) -> int:
        """The number of ``passage`` in the Sources list, added at the end if new."""
        for source in self.sources:
            if source.passage_id == passage.id:
                return source.number
        number = len(self.sources) + 1
        self.sources.append(CitedSource(number, passage.id, passage.document, passage.location))
        return number

    def sources_markdown(self) -> str:
        """The Sources section (``## Sources`` and one line per source)."""
        if not self.sources:
            return "## Sources\n\n(none)"
        return "## Sources\n\n" + "\n".join(s.line() for s in self.sources)


def describe_location(location: str) -> str:
    """A passage location in words.

    Example:
        >>> describe_location("L3-4"), describe_location("p2"), describe_location("P5")
        ('lines 3-4', 'page 2', 'paragraph 5')
    """
    if location.startswith("L"):
        span = location[1:]
        return f"lines {span}" if "-" in span else f"line {span}"
    if location.startswith("p"):
        return f"page {location[1:]}"
    if location.startswith("P"):
        return f"paragraph {location[1:]}"
    return location


def _looks_cited(part: str) -> bool:
    """A bracket part that reads as a citation: one token with ``#`` or ``.`` in it,
    or a bare number (the model may number sources itself; those are not ours)."""
    return (
        bool(part)
        and not any(c.isspace() for c in part)
        and ("#" in part or "." in part or part.isdigit())
    )


def resolve_citations(draft: str, passages: Iterable[Passage]) -> CitedText:
    """Keep citations of known passage IDs as ``[n]``; remove and count the rest.

    Args:
        draft: Markdown citing passage IDs in brackets.
        passages: the store's passages (``EvidenceStore.passages()``).

    Example:
        >>> from concilium.tools.evidence import Passage
        >>> known = [Passage("a.md#L1-2", "a.md", "L1-2", "Rent is 5.", "h", 0)]
        >>> out = resolve_citations("Rent is 5 [a.md#L1-2] [z.md#L9]. Again [a.md#L1-2].", known)
        >>> out.text, out.fabricated, out.sources[0].line()
        ('Rent is 5 [1]. Again [1].', ['z.md#L9'], '1. a.md, lines 1-2')
    """
    known = {p.id: p for p in passages}
    result = CitedText(text="")

    def replace(match: re.Match[str]) -> str:
        parts = [p for p in _SPLIT.split(match.group(1).strip()) if p]
        if not parts or not all(_looks_cited(p) for p in parts):
            return match.group(0)
        cited: list[int] = []
        for part in parts:
            passage = known.get(part)
            if passage is None:
                result.fabricated.append(part)
                continue
            number = result.cite(passage)
            result.kept += 1
            if number not in cited:
                cited.append(number)
        lead = " " if match.group(0).startswith((" ", "\t")) else ""
        return lead + "".join(f"[{n}]" for n in cited) if cited else ""

    result.text = _BRACKET.sub(replace, draft)
    return result
