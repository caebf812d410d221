"""Parallel search decomposition (ParallelSearch, Zhao et al. 2025, prompted rather than
trained; ``docs/methods.md#search-decomposition``): a model splits the question into
independent search queries (one per line, at most ``max_queries``), the queries go
to the ``search`` tool all at once, the hits are merged and an answer is written
from them.

Each search is a ``use_tool`` call keyed ``<path>/<tool>/q<i>``, so a resumed run
replays it from the call record instead of searching again. Its hits are read as
values: the passages of a tool that gives them (the built-in ``search``: each
passage's ``id`` and ``text``); only a tool that returns text alone is read line by
line, each ``[source] passage`` line a hit.

Merging (ours; the reference concatenates per sub-query with no deduplication):
the same passage from several queries counts once, ranked by reciprocal-rank fusion
(``sum over queries of 1 / (rrf_k + rank)``, ranks from 1, ``rrf_k`` = 60 as in
Cormack et al.), ties in first-seen order; the best ``max_passages`` are shown to
the writer. A query whose search fails (a ``ToolError``) contributes no hits.
Decomposition is one turn rather than the reference's ``##`` inside a multi-turn
search loop: an untrained model follows "one query per line" more reliably.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from pydantic import Field

from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    AgentSlot,
    AnswerFormat,
    AnswerSpec,
    Builder,
    PatternOptions,
    PatternSpec,
    Respondent,
    ask,
    conversation,
    register_pattern,
    turn,
    use_tool,
)
from concilium.prompts import PromptLibrary
from concilium.tools import ToolError, ToolRegistry

Hit = tuple[str, str]
"""One search hit: the passage's ID (or source) and its text."""

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|query\s*\d*\s*:)\s*", re.IGNORECASE)
_HIT = re.compile(r"^\[([^\]\n]+)\]\s*(.+)$", re.MULTILINE)


def parse_queries(text: str, limit: int) -> list[str]:
    """The distinct non-empty lines of ``text`` with bullets and numbers stripped, at most ``limit``.

    Example:
        >>> parse_queries("1. lighthouse year\\n- harbour depth\\n\\n1. lighthouse year", 4)
        ['lighthouse year', 'harbour depth']
    """
    queries: list[str] = []
    for line in text.splitlines():
        query = _BULLET.sub("", line).strip().strip('"')
        if query and query.lower() not in (q.lower() for q in queries):
            queries.append(query)
    return queries[:limit]


def search_hits(value: Any) -> list[Hit]:
    """The ``(id, text)`` hits of one search result, in rank order: the passages when
    the result is a list of them (dicts with ``id``, or ``source``, and ``text``: the
    built-in ``search``'s value), else each ``[source] passage`` line of its text.

    Example:
        >>> search_hits([{"id": "a.md#L1", "text": "x", "score": 2.0}])
        [('a.md#L1', 'x')]
        >>> search_hits("[b.txt] y\\nno hit here")
        [('b.txt', 'y')]
    """
    if isinstance(value, list):
        passages = cast(list[Any], value)
        return [(str(p.get("id", p.get("source"))), str(p["text"]).strip())
                for p in passages if isinstance(p, dict) and "text" in p
                and ("id" in p or "source" in p)]  # fmt: skip
    return [(m.group(1).strip(), m.group(2).strip()) for m in _HIT.finditer(str(value))]


def fuse_hits(rankings: Sequence[Sequence[Hit]], rrf_k: int = 60) -> list[tuple[str, str, float]]:
    """Deduplicated ``(id, text, score)`` from several searches' hits, best first by
    reciprocal-rank fusion.

    Example:
        >>> fuse_hits([[("a.txt", "x"), ("b.txt", "y")], [("b.txt", "y"), ("c.txt", "z")]])[0][:2]
        ('b.txt', 'y')
    """
    scores: dict[Hit, float] = {}
    for hits in rankings:
        for rank, hit in enumerate(hits, 1):
            scores[hit] = scores.get(hit, 0.0) + 1 / (rrf_k + rank)
    order = sorted(scores, key=lambda hit: -scores[hit])  # stable: ties keep first-seen order
    return [(pid, text, round(scores[pid, text], 6)) for pid, text in order]


def search_decomposition(
    agent: Respondent,
    tools: ToolRegistry,
    writer: Respondent | None = None,
    *,
    tool: str = "search",
    max_queries: int = 4,
    max_passages: int = 8,
    rrf_k: int = 60,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    name: str = "search_decomposition",
) -> Graph:
    """Decompose into search queries, search them concurrently, merge, answer.

    Args:
        agent: writes the queries (and the answer, unless ``writer`` is given).
        tools: a registry holding ``tool``: a one-argument search returning its
            passages as values (the built-in ``search``; see ``search_hits``) or
            ``[source] passage`` lines.
        max_queries: the most queries kept from the decomposition.
        max_passages: the most merged passages shown to the writer.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> reg = ToolRegistry()
        >>> @reg.tool
        ... def search(query: str) -> str:
        ...     "Search."
        ...     return f"[{query}.txt] about {query}"
        >>> fake = FakeModel({"a": ["cats\\ndogs", "Both."]})
        >>> result = run_sync(search_decomposition(Agent("a", fake.spec()), reg), "cats and dogs?")
        >>> result.answer, result.details["queries"], len(result.details["passages"])
        ('Both.', ['cats', 'dogs'], 2)
    """
    if max_queries < 1 or max_passages < 1:
        raise ValueError(
            f"search_decomposition needs max_queries >= 1 and max_passages >= 1, "
            f"got {max_queries}, {max_passages}"
        )
    if tool not in tools:
        raise ValueError(f"no tool {tool!r} in the registry; it has {tools.names()}")
    opts = PatternOptions(answer, prompts, name)
    search_tool = tools.get(tool)
    author = writer if writer is not None else agent

    async def search(ctx: RunContext, i: int, query: str) -> list[Hit]:
        try:
            reply = await use_tool(ctx, search_tool, search_tool.bind([query]), f"q{i}")
        except ToolError:
            return []
        return search_hits(reply.value if isinstance(reply.value, list) else reply.text)

    async def run(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = state["question"]
        ask_text = opts.lib.render(
            "search_decomposition/decompose", question=question, max_queries=max_queries
        )
        split = await ask(ctx, agent, conversation(state, ask_text), "decompose")
        queries = parse_queries(split.text, max_queries) or [question]
        first = turn(ctx, split, text=split.text, answer=None, prompt=ask_text, step="decompose")
        rankings = await ctx.map(lambda iq: search(ctx, *iq), list(enumerate(queries)))
        fused = fuse_hits(rankings, rrf_k)[:max_passages]
        listed = "\n".join(f"{i}. [{s}] {p}" for i, (s, p, _) in enumerate(fused, 1))
        passages = listed or "(no passage found)"
        answer_text = opts.lib.render(
            "search_decomposition/answer", question=question, passages=passages
        )
        reply = await ask(ctx, author, conversation(state, answer_text), "answer")
        final = opts.fmt.extract(reply.text)
        last = turn(ctx, reply, text=reply.text, answer=final, prompt=answer_text, step="answer")
        return {"answer": final, "text": reply.text, "transcript": [first, last],
                "details": {"queries": queries, "hits": sum(map(len, rankings)),
                            "passages": [{"id": i, "text": t, "score": x} for i, t, x in fused]}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("search", run, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "search")
    graph.add_edge("search", END)
    return graph


# -- workflow files -------------------------------------------------------------


class SearchDecompositionSpec(PatternSpec):
    """A question split into search queries, searched at once, merged, answered."""

    kind: Literal["search_decomposition"]
    agent: AgentSlot
    writer: AgentSlot | None = None
    tool: str = "search"
    max_queries: int = Field(default=4, ge=1, le=32)
    max_passages: int = Field(default=8, ge=1, le=64)
    rrf_k: int = Field(default=60, ge=1)
    answer: AnswerSpec = "text"


@register_pattern(SearchDecompositionSpec)
def _build(spec: SearchDecompositionSpec, b: Builder) -> Graph:
    writer = b.slot(spec.writer, "writer") if spec.writer is not None else None
    return search_decomposition(
        b.slot(spec.agent, "agent"), b.tools([spec.tool], "tool"), writer, tool=spec.tool,
        max_queries=spec.max_queries, max_passages=spec.max_passages, rrf_k=spec.rrf_k,
        answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
