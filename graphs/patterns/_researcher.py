"""One researcher of the research pattern (issue 13): a small plan-and-execute loop
over the evidence store's ``search`` and ``read`` tools with its own step budget,
returning claims whose passage IDs are attached by code.

Example:
    >>> Claim("Rent is 5.", ["a.md#L1"]).votes
    1
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from concilium.agents import Agent
from concilium.graphs import RunContext
from concilium.graphs.kit import Turn, ask, turn, use_tool, user
from concilium.prompts import PromptLibrary
from concilium.tools import Tool, ToolError
from concilium.tools.evidence import EvidenceStore, Passage

from ._search_decomposition import parse_queries
from ._sources import support

NO_EVIDENCE = "no evidence found in the folder"
MAX_WINDOW_CHARS = 1_200
"""A read window longer than this is cut to its hit passage (short contexts)."""
MAX_QUERY_CHARS = 200
RRF_K = 60


@dataclass
class Claim:
    """A fact one researcher found, the passages that state it and its votes;
    ``superseded`` names the fact that replaced it when sources disagreed."""

    text: str
    passages: list[str]
    votes: int = 1
    superseded: str = ""


@dataclass
class Finding:
    """One researcher's result: its sub-question, query, passages read, claims,
    agreement, steps used of its budget, and any disagreement between sources;
    ``queries`` are the searches it ran (the sub-queries, with ``decompose``)."""

    question: str
    query: str = ""
    queries: list[str] = field(default_factory=list[str])
    retrieved: list[str] = field(default_factory=list[str])
    claims: list[Claim] = field(default_factory=list[Claim])
    agreement: float = 0.0
    note: str = ""
    steps: int = 0
    read: list[str] = field(default_factory=list[str])


def fact_key(text: str) -> str:
    """A fact's text folded for merging equal facts (lowercase, letters, digits, spaces)."""
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def fused(rankings: list[list[str]]) -> list[str]:
    """Passage IDs of several rankings merged by reciprocal rank (the sum of
    ``1 / (60 + rank)``, ranks from 1), best first; ties in first-seen order."""
    score: dict[str, float] = {}
    for ranking in rankings:
        for rank, pid in enumerate(ranking, start=1):
            score[pid] = score.get(pid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(score, key=lambda p: -score[p])


def passage_ids(value: Any) -> list[str]:
    """The ``id`` of each passage in a ``search`` or ``read`` value, in order, once each."""
    hits: list[Any] = value if isinstance(value, list) else []
    return list(dict.fromkeys(str(h["id"]) for h in hits if isinstance(h, dict) and "id" in h))


def progress(ctx: RunContext, who: str, step: str, text: str) -> None:
    """A progress line for streaming clients (``[researcher 2] read a.md#L3: ...``),
    sent as a turn event; it is not a model turn, so it is not in the transcript."""
    ctx.emit({"type": "turn", "agent": who, "text": text, "answer": None, "step": step})


@dataclass
class Researcher:
    """One researcher's plan-and-execute loop over the store's ``search`` and ``read``.

    Each model call and each tool call is a step of at most ``max_steps``: the
    query (1), the searches (up to 2), then reads and extractions in pairs, so a
    small budget reads fewer windows instead of failing. Tool failures count as
    empty results; a window's fact is kept only with the IDs ``support`` finds.
    Tool calls go through ``use_tool``, and the passage IDs come from the tools'
    values (the passages the store found), never parsed back out of their text.

    With ``decompose`` = N > 0 the query call instead splits the sub-question into
    at most N independent search queries (``search_decomposition``'s prompt and
    ``parse_queries``); they are searched concurrently, one step each, and the hits
    merged by reciprocal rank (``fuse_hits``) before reading.
    """

    agent: Agent
    store: EvidenceStore
    lib: PromptLibrary
    passages: int
    max_steps: int
    decompose: int = 0
    search: Tool = field(init=False)
    read: Tool = field(init=False)

    def __post_init__(self) -> None:
        self.search, self.read = self.store.tools()

    async def investigate(
        self,
        ctx: RunContext,
        index: int,
        question: str,
        entries: list[Turn],
        past: Sequence[dict[str, Any]] = (),
    ) -> Finding:
        """Research ``question``; every model call gets ``past``, the conversation
        before the run's question (``kit.history``), then its own prompt."""
        who = f"{self.agent.name} {index + 1}"
        finding = Finding(question, query=question)
        progress(ctx, who, "plan", f"researching: {question}")
        if self.decompose and finding.steps < self.max_steps:
            finding.steps += 1
            prompt = self.lib.render("search_decomposition/decompose", question=question, max_queries=self.decompose)  # fmt: skip
            reply = await ask(ctx, self.agent, [*past, *user(prompt)], f"q{index}/decompose")
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="decompose", index=index))  # fmt: skip
            bounded = [q[:MAX_QUERY_CHARS] for q in parse_queries(reply.text, self.decompose)]
            finding.queries = list(dict.fromkeys(bounded)) or [question]
            finding.query = finding.queries[0]
        elif finding.steps < self.max_steps:
            finding.steps += 1
            prompt = self.lib.render("research/query", question=question)
            reply = await ask(ctx, self.agent, [*past, *user(prompt)], f"q{index}/query")
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="query", index=index))  # fmt: skip
            lines = reply.text.strip().splitlines()
            # a rambling model's first line, bounded; nothing usable: the question itself
            finding.query = (
                lines[0].strip()[:MAX_QUERY_CHARS] if lines and lines[0].strip() else question
            )
        if self.decompose:
            best = await self._search_decomposed(ctx, index, who, finding)
        else:
            best = await self._search(ctx, index, who, finding)
        if not best:
            finding.note = NO_EVIDENCE
            progress(ctx, who, "done", f"{NO_EVIDENCE} for: {question}")
            return finding
        windows = await self._read(ctx, index, who, best, finding)
        facts = await ctx.map(lambda w: self._extract(ctx, index, question, w, entries, past), list(enumerate(windows)))  # fmt: skip
        finding.steps += len(windows)
        merged: dict[str, Claim] = {}
        for fact, window in zip(facts, windows, strict=True):
            ids = support(fact, window) if fact else []
            if not ids:
                continue
            claim = merged.setdefault(fact_key(fact), Claim(fact, [], 0))
            claim.votes += 1
            claim.passages.extend(i for i in ids if i not in claim.passages)
        finding.claims = sorted(merged.values(), key=lambda c: -c.votes)
        total = sum(c.votes for c in finding.claims)
        finding.agreement = finding.claims[0].votes / total if total else 0.0
        finding.note = "" if finding.claims else NO_EVIDENCE
        progress(ctx, who, "done", f"{len(finding.claims)} claims from {len(windows)} windows in {finding.steps} steps")  # fmt: skip
        return finding

    async def _ids(self, ctx: RunContext, tool: Tool, arguments: dict[str, str], tag: str) -> list[str]:  # fmt: skip
        """The IDs of the passages a ``search`` or ``read`` call gave, those the store
        still knows (a replayed call may predate a refresh); none when it failed."""
        try:
            reply = await use_tool(ctx, tool, arguments, tag, agent=self.agent.name)
        except ToolError:
            return []
        known = {p.id for p in self.store.passages()}
        return [i for i in passage_ids(reply.value) if i in known]

    async def _search(self, ctx: RunContext, index: int, who: str, finding: Finding) -> list[str]:
        """The best ``passages`` hits of the sub-question and the query, fused by
        reciprocal rank (the sub-question's first on ties)."""
        rankings: list[list[str]] = []
        for n, query in enumerate(dict.fromkeys([finding.question, finding.query])):
            if finding.steps >= self.max_steps:
                break
            finding.steps += 1
            finding.queries.append(query)
            ids = await self._ids(ctx, self.search, {"query": query}, f"q{index}/{n}")
            progress(ctx, who, "search", f"search {query!r}: {len(ids)} passages {ids[:3]}")
            rankings.append(ids)
        finding.retrieved = fused(rankings)[: self.passages]
        return finding.retrieved

    async def _search_decomposed(
        self, ctx: RunContext, index: int, who: str, finding: Finding
    ) -> list[str]:
        """The sub-queries searched at once (as many as the budget has steps for),
        the hits merged by reciprocal-rank fusion, the best ``passages`` kept."""
        queries = (finding.queries or [finding.question])[: max(self.max_steps - finding.steps, 0)]
        finding.queries = queries
        finding.steps += len(queries)
        rankings = await ctx.map(
            lambda nq: self._ids(ctx, self.search, {"query": nq[1]}, f"q{index}/{nq[0]}"),
            list(enumerate(queries)),
        )
        for query, ids in zip(queries, rankings, strict=True):
            progress(ctx, who, "search", f"search {query!r}: {len(ids)} passages {ids[:3]}")
        finding.retrieved = fused(rankings)[: self.passages]
        return finding.retrieved

    async def _read(
        self, ctx: RunContext, index: int, who: str, best: list[str], finding: Finding
    ) -> list[list[Passage]]:
        """Each hit with its neighbours; with too few steps left for a read and an
        extraction per hit, fewer hits are read (one left: the hit alone)."""
        left = self.max_steps - finding.steps
        reads = min(len(best), left // 2)
        by_id = {p.id: p for p in self.store.passages()}
        read = await ctx.map(
            lambda ip: self._ids(ctx, self.read, {"passage_id": ip[1]}, f"q{index}/{ip[0]}"),
            list(enumerate(best[:reads])),
        )
        finding.steps += reads
        windows: list[list[Passage]] = []
        for pid, ids in zip(best[:reads], read, strict=True):
            window = [by_id[i] for i in ids] or [by_id[pid]]
            finding.read.extend(p.id for p in window if p.id not in finding.read)
            progress(ctx, who, "read", f"read {pid}: {[p.id for p in window]}")
            windows.append(window if sum(len(p.text) for p in window) <= MAX_WINDOW_CHARS else [by_id[pid]])  # fmt: skip
        if not reads and finding.steps < self.max_steps:
            windows.append([by_id[best[0]]])
        return windows[: self.max_steps - finding.steps]

    async def _extract(
        self,
        ctx: RunContext,
        index: int,
        question: str,
        item: tuple[int, list[Passage]],
        entries: list[Turn],
        past: Sequence[dict[str, Any]],
    ) -> str:
        """One short call: the fact the window states for the sub-question, or ''."""
        i, window = item
        text = " ".join(p.text for p in window)
        prompt = self.lib.render("research/extract", question=question, text=text)
        reply = await ask(ctx, self.agent, [*past, *user(prompt)], f"q{index}/p{i}")
        entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="extract", index=index))  # fmt: skip
        fact = reply.text.strip().splitlines()[0].strip() if reply.text.strip() else ""
        return "" if fact.upper().startswith("NONE") else fact
