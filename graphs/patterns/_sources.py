"""Source handling for the research pattern (issue 13): which passages a fact rests
on, which facts disagree across documents, and how a disagreement is settled.

Attribution is by code: a fact is supported by the passages read that contain all
its numbers and at least half its content words (the best such passages), so the
IDs a claim carries never come from the model. Two facts disagree when they are the
same statement with different figures (the words left when numbers are removed
mostly agree, the numbers do not) and come from different documents. The rule that
settles a disagreement is written down and deterministic: the document with the
newer date wins (a date in its first passages, else a year in its name), then the
fact with more votes; agents are asked to check the rule's pick, and their answers
are reported beside it, never in place of it. Once written, a sentence that
still states the dropped figure as current (``states_superseded``) is marked in
place with the figure that replaced it.

Example:
    >>> from concilium.tools.evidence import Passage
    >>> old = Passage("r23.pdf#p2", "r23.pdf", "p2", "Revenue for 2023 was EUR 40 million.", "h", 1)
    >>> support("Revenue was EUR 40 million.", [old])
    ['r23.pdf#p2']
    >>> find_conflicts(
    ...     ["Revenue for 2023 was EUR 40 million.", "Revenue for 2024 was EUR 52 million."],
    ...     [{"r23.pdf"}, {"r24.pdf"}],
    ... )
    [(0, 1)]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from concilium.tools.evidence import Passage

RULE = "when documents disagree, the newer document date wins"
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d-[01]\d-[0-3]\d)(?!\d)")
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d\d)(?!\d)")
_PAST = re.compile(
    r"\b(?:supersed\w*|outdated|out of date|previous(?:ly)?|earlier|older|former(?:ly)?"
    r"|no longer|revised|replaced)\b",
    re.IGNORECASE,
)
"""Words by which a sentence itself says a figure is no longer current."""
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "had",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "the",
        "their",
        "this",
        "to",
        "was",
        "were",
        "which",
        "who",
        "with",
    ]
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and (len(w) > 2 or w[0].isdigit())}  # fmt: skip


def _numbers(words: set[str]) -> set[str]:
    return {w for w in words if w[0].isdigit()}


def support(fact: str, passages: Sequence[Passage]) -> list[str]:
    """The IDs of the passages in ``passages`` that best support ``fact``: each
    contains all the fact's numbers and at least half its content words; of those,
    the ones sharing the most words with it. Empty when none does."""
    words = _words(fact)
    numbers = _numbers(words)
    need = max(1, math.ceil(len(words) / 2))
    scored = [(len(words & have), p.id) for p in passages
              if numbers <= (have := _words(p.text))]  # fmt: skip
    best = max((score for score, _ in scored), default=0)
    return [pid for score, pid in scored if score == best and score >= need]


def find_conflicts(
    facts: Sequence[str], documents: Sequence[set[str]], question: str = "", overlap: float = 0.6
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of facts that state the same thing with different
    figures (Jaccard overlap of their words without numbers >= ``overlap``, different
    number sets) from disjoint sets of ``documents``. A pair is no conflict when the
    ``question`` names a figure of each (it asks for both: "from 2024 to 2025"), nor
    when only years differ and neither states another figure (two periods, as in
    "2024 annual report" and "2025 annual report").

    Example:
        >>> facts = ["Revenue for 2024 was EUR 46 million.", "Revenue for 2025 was EUR 69 million."]
        >>> find_conflicts(facts, [{"a.pdf"}, {"b.pdf"}], "What was the latest revenue?")
        [(0, 1)]
        >>> find_conflicts(
        ...     facts, [{"a.pdf"}, {"b.pdf"}], "How did revenue change from 2024 to 2025?"
        ... )
        []
        >>> find_conflicts(
        ...     ["2024 annual report of Tessary Labs", "2025 annual report of Tessary Labs"],
        ...     [{"a.pdf"}, {"b.pdf"}],
        ... )
        []
    """
    words = [_words(f) for f in facts]
    asked = _numbers(_words(question))
    pairs: list[tuple[int, int]] = []
    for i in range(len(facts)):
        for j in range(i + 1, len(facts)):
            na, nb = _numbers(words[i]), _numbers(words[j])
            if not na or not nb or na == nb or documents[i] & documents[j]:
                continue
            if asked & (na - nb) and asked & (nb - na):
                continue
            if all(_YEAR.fullmatch(n) for n in na | nb):  # only the period differs
                continue
            ta, tb = words[i] - na, words[j] - nb
            if ta and tb and len(ta & tb) / len(ta | tb) >= overlap:
                pairs.append((i, j))
    return pairs


def document_date(name: str, passages: Sequence[Passage]) -> str | None:
    """A document's date: the first ISO date (``2026-02-12``) in its first three
    passages, else the latest year in its name, else None.

    Example:
        >>> document_date("reports/annual_report_2024.pdf", [])
        '2024'
    """
    for passage in sorted(passages, key=lambda p: p.index)[:3]:
        found = _DATE.search(passage.text)
        if found:
            return found.group(1)
    years = _YEAR.findall(name.rsplit("/", 1)[-1])
    return max(years) if years else None


@dataclass
class Side:
    """One side of a disagreement: the fact, its document and that document's date,
    its votes and the passages that state it."""

    fact: str
    document: str
    date: str | None
    votes: int
    passages: list[str] = field(default_factory=list[str])


@dataclass
class Conflict:
    """Two sources disagreeing on one sub-question's fact, and how it was settled.

    Attributes:
        question: the sub-question.
        kept: the side the report uses (``a`` when ``rule`` is ``"unsettled"``).
        dropped: the other side (kept too when ``rule`` is ``"unsettled"``).
        rule: ``"newer document"``, ``"more votes"``, ``"checkers' vote"`` (the rule
            could not decide, most checking agents chose ``kept``) or ``"unsettled"``.
        checks: each checking agent's pick: ``"kept"``, ``"dropped"`` or ``"unclear"``.
    """

    question: str
    kept: Side
    dropped: Side
    rule: str
    checks: list[str] = field(default_factory=list[str])

    def sentence(self) -> str:
        """The report's line, e.g. ``Sources disagree: "X" in A (2023) vs "Y" in B
        (2024); used "Y" because B is the newer document (...)``."""
        old, new = self.dropped, self.kept

        def side(s: Side) -> str:
            return f'"{s.fact.rstrip(". ")}" in {s.document}' + (f" ({s.date})" if s.date else "")

        said = f"Sources disagree: {side(old)} vs {side(new)}"
        if self.rule == "unsettled":
            return (
                f"{said}; neither document is dated later, the votes tie and the checking "
                "agents did not choose, so both are reported."
            )
        why = {
            "newer document": f"{new.document} is the newer document (rule: {RULE})",
            "more votes": f"the documents' dates do not decide and it had more votes ({new.votes} to {old.votes})",
            "checkers' vote": "neither the documents' dates nor the votes decide and most checking agents chose it",
        }[self.rule]  # fmt: skip
        agreed = self.checks.count("kept")
        checked = f"; {agreed} of {len(self.checks)} checking agents agreed" if self.checks else ""
        return f'{said}; used "{new.fact.rstrip(". ")}" because {why}{checked}.'

    def marker(self, citation: str = "") -> str:
        """What a sentence stating the dropped figure as current gets in place, e.g.
        ``*(superseded by B (2024), which gives "Y" [2])*``; ``citation`` cites ``kept``."""
        new = self.kept
        dated = f" ({new.date})" if new.date else ""
        return f'*(superseded by {new.document}{dated}, which gives "{new.fact.rstrip(". ")}"{citation})*'

    def decide_by_checks(self) -> None:
        """When the rule could not decide: the side most checking agents chose wins
        (``rule`` becomes ``"checkers' vote"``); a tie leaves it unsettled."""
        kept, dropped = self.checks.count("kept"), self.checks.count("dropped")
        if kept == dropped:
            return
        if dropped > kept:
            self.kept, self.dropped = self.dropped, self.kept
            swap = {"kept": "dropped", "dropped": "kept"}
            self.checks = [swap.get(c, c) for c in self.checks]
        self.rule = "checkers' vote"


def settle(question: str, a: Side, b: Side) -> Conflict:
    """The rule's verdict on two sides: the newer document, else more votes, else
    unsettled.

    Example:
        >>> old, new = (
        ...     Side("EUR 40 million", "r.pdf", "2024", 2),
        ...     Side("EUR 52 million", "s.pdf", "2025-02-01", 1),
        ... )
        >>> settle("Revenue?", old, new).kept.fact
        'EUR 52 million'
        >>> settle("Revenue?", Side("EUR 40 million", "r.md", None, 3), new).rule
        'more votes'
        >>> settle("Revenue?", Side("EUR 40 million", "r.md", None, 1), new).rule
        'unsettled'
    """
    if a.date and b.date and a.date != b.date:
        newer, older = (a, b) if a.date > b.date else (b, a)
        return Conflict(question, newer, older, "newer document")
    if a.votes != b.votes:
        more, fewer = (a, b) if a.votes > b.votes else (b, a)
        return Conflict(question, more, fewer, "more votes")
    return Conflict(question, a, b, "unsettled")


def _figures(fact: str, other: str) -> set[str]:
    """The numbers ``fact`` states and ``other`` does not; years are left out when
    another number remains (the figure that changed, not the period it is for)."""
    own = _numbers(_words(fact)) - _numbers(_words(other))
    return {n for n in own if not _YEAR.fullmatch(n)} or own


def states_superseded(sentence: str, cited: set[str], conflict: Conflict) -> bool:
    """Whether ``sentence`` (its citations removed) states the figure ``conflict``
    settled against as if it were current: it has every figure only the dropped fact
    has and none only the kept fact has (a sentence giving both compares them), no
    word saying the figure is past (``superseded``, ``previously``, ``earlier``, ...),
    and it cites the dropped document (``cited`` names the documents it cites) or
    shares at least half the dropped fact's words. An unsettled conflict dropped
    nothing.

    Example:
        >>> c = settle(
        ...     "Revenue?",
        ...     Side("Revenue for 2024 was EUR 46 million.", "r24.pdf", "2025-02-14", 1),
        ...     Side("Revenue for 2025 was EUR 69 million.", "r25.pdf", "2026-02-12", 1),
        ... )
        >>> states_superseded("Revenue was EUR 46 million.", {"r24.pdf"}, c)
        True
        >>> states_superseded("Revenue rose from EUR 46 million to EUR 69 million.", set(), c)
        False
        >>> states_superseded("Revenue was previously EUR 46 million.", {"r24.pdf"}, c)
        False
        >>> states_superseded("The canteen serves 46 meals a day.", set(), c)
        False
    """
    if conflict.rule == "unsettled":
        return False
    old, new = conflict.dropped.fact, conflict.kept.fact
    words = _words(sentence)
    stale = _figures(old, new)
    if not stale or not stale <= words or _figures(new, old) & words or _PAST.search(sentence):
        return False
    if conflict.dropped.document in cited:
        return True
    topic = _words(old) - _numbers(_words(old))
    return bool(topic) and 2 * len(topic & words) >= len(topic)
