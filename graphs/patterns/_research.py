"""A research assistant over a local document folder (``docs/methods.md#research``).

A lead plans sub-questions (JSON, under guided decoding when the model has
structured output, else parsed leniently from lines). One researcher per
sub-question runs concurrently, each a small plan-and-execute loop with its own
step budget (``max_steps``): it plans a keyword query (one call), executes
``search`` with the sub-question and the query (tool calls; with ``decompose`` = N,
up to N sub-queries searched concurrently and merged by reciprocal rank), ``read``s the best
hits with their neighbour passages, and asks one short call per window for the
fact it states (map). The passage IDs a claim carries are attached by code, by
word overlap between the fact and the passages read, never taken from the model;
a fact no passage read supports is dropped. Equal facts are merged and voted.
Where two sources disagree on a fact (the same statement with different
figures, e.g. a stale report against a newer one), the documented rule settles
it, the newer document's date wins, and the lead and verifier check the rule's
pick; the report says so. A writer drafts one section per sub-question
concurrently from its settled facts (the current figure, which document supersedes
which), citing passage IDs; the citation pass (``_citations.py``) removes
unknown IDs and numbers the rest; a yes/no verifier checks every (sentence, cited
passage) pair, P(yes) read from token logprobs where the server gives them. A
sentence that still states a superseded figure as current is marked in place, by
code, with the figure that replaced it and its citation. A
sub-question with no passage answers ``NO_EVIDENCE``; a run out of budget returns
what it has, marked partial. Every researcher step is also sent as a progress
event (``[researcher 2] search 'revenue 2025': 3 passages``) for streaming clients.

Every model call gets the conversation before the question first (``kit.history``:
the system message, earlier turns, few-shot examples), then its step's prompt
(docs/methods.md, "Conversation"); only the plan's prompt quotes the question, the
later steps work on the sub-questions, passages and claims.

The researcher's loop is ``_researcher.py``; attribution, disagreement and the rule
that settles it are ``_sources.py``; the citation pass is ``_citations.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from concilium import BudgetExceeded, GraphError, OutputParseError
from concilium._json import load_json
from concilium.agents import Agent, ModelSpec
from concilium.agents.ledger import current_ledger
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    Builder,
    PatternSpec,
    Turn,
    ask,
    conversation,
    history,
    prompt_library,
    register_pattern,
    turn,
    user,
)
from concilium.prompts import PromptLibrary
from concilium.tools import Tool
from concilium.tools.evidence import Embedder, EvidenceStore, Passage, openai_embedder

from ._best_of_n import yes_probability
from ._citations import CitedText, resolve_citations
from ._researcher import NO_EVIDENCE, Claim, Finding, Researcher, fact_key, progress
from ._sources import Conflict, Side, document_date, find_conflicts, settle, states_superseded

_LINE = re.compile(r"^\s*(?:[-*]|\d+[.)])?\s*(.+?)\s*$")
_CITE = re.compile(r"\[(\d+)\]")
# a sentence ends at . ! ? (with the citations after it) or at the line's end; a
# point between digits (EUR 5.5 million) does not end it
_SENTENCE = re.compile(r"(?:[^.!?\n]|\.(?=\d))+(?:[.!?]+(?:\s*\[\d+\])*|(?=\n)|$)")


class SubQuestions(BaseModel):
    """The lead's plan (its structured output). Each question is bounded in length so
    guided decoding cannot run a small model's string on until ``max_tokens``."""

    questions: list[Annotated[str, Field(min_length=3, max_length=160)]] = Field(
        min_length=1, max_length=8
    )


def parse_subquestions(text: str, limit: int) -> list[str]:
    """Sub-questions from ``{"questions": [...]}``, a JSON list, or one per line.

    Example:
        >>> parse_subquestions('{"questions": ["Who leads?", "Revenue?"]}', 5)
        ['Who leads?', 'Revenue?']
        >>> parse_subquestions("Sure:\\n1. Who leads?\\n2) Revenue?\\n", 1)
        ['Who leads?']
    """
    found: list[str] = []
    try:
        data = load_json(text[text.find("{") : text.rfind("}") + 1] or text)
        items = data.get("questions", []) if isinstance(data, dict) else data
        found = [str(q).strip() for q in items if str(q).strip()]
    except (ValueError, AttributeError, TypeError):
        for line in text.splitlines():
            match = _LINE.match(line)
            if match and match.group(1).endswith("?"):
                found.append(match.group(1))
    return list(dict.fromkeys(found))[:limit]


def research(
    lead: Agent,
    researcher: Agent,
    writer: Agent,
    verifier: Agent,
    store: EvidenceStore,
    *,
    max_questions: int = 4,
    passages: int = 3,
    max_steps: int = 10,
    threshold: float = 0.5,
    decompose: int = 0,
    prompts: PromptLibrary | None = None,
    name: str = "research",
) -> Graph:
    """Plan, research concurrently, vote, settle disagreements, write concurrently,
    cite, verify.

    The answer is the Markdown report; ``details`` holds the sub-questions,
    findings (claims with passage IDs and votes, steps used), conflicts and how
    each was settled, citations, fabricated IDs removed, verdicts, rates and
    ``partial``.

    Args:
        lead: plans the sub-questions and checks how disagreements were settled.
        researcher: answers one sub-question (its query and per-window facts).
        writer: drafts one section per sub-question.
        verifier: says Yes or No to each (sentence, cited passage) pair.
        store: the evidence store the researchers search and read.
        max_questions: sub-questions at most.
        passages: hits each researcher reads (with their neighbours).
        max_steps: model and tool calls each researcher may make.
        threshold: P(yes) at or above which a sentence counts as supported.
        decompose: when > 0, each researcher splits its sub-question into at most
            this many search queries and searches them concurrently, hits merged by
            reciprocal rank (``search_decomposition``); 0 plans one keyword query.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.md").write_text("The lighthouse was built in 1874.\\n")
        >>> store = EvidenceStore(folder, path=folder / "index.sqlite")
        >>> _ = store.refresh()
        >>> def say(agent, i, msgs):
        ...     text = msgs[-1]["content"]
        ...     if agent == "writer":
        ...         return "It was built in 1874 [a.md#L1] [made-up.md#L9]."
        ...     return "Yes" if "Claim:" in text else "The lighthouse was built in 1874."
        >>> team = [
        ...     Agent(n, FakeModel(fn=say).spec())
        ...     for n in ("lead", "researcher", "writer", "verifier")
        ... ]
        >>> result = run_sync(research(*team, store), "When was the lighthouse built?")
        >>> result.details["fabricated"], result.details["citations"][0]["passage_id"]
        (['made-up.md#L9'], 'a.md#L1')
    """
    if max_questions < 1 or passages < 1 or max_steps < 1 or decompose < 0:
        raise GraphError(
            "research needs max_questions, passages and max_steps >= 1 and decompose >= 0, "
            f"got {max_questions}, {passages}, {max_steps}, {decompose}"
        )
    lib = prompt_library(prompts)
    planner = lead.with_options(output=SubQuestions) if lead.model.capabilities.structured_output else lead  # fmt: skip
    judge = verifier.with_options(logprobs=True, top_logprobs=5) if verifier.model.capabilities.logprobs else verifier  # fmt: skip
    team = Researcher(researcher, store, lib, passages, max_steps, decompose)
    checkers = list({a.name: a for a in (lead, verifier)}.values())

    async def run_all(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question: str = state["question"]
        past = history(state)  # the conversation before the question, in every call
        entries: list[Turn] = []
        details: dict[str, Any] = {"partial": False, "questions": [], "findings": [], "conflicts": []}  # fmt: skip
        try:
            prompt = lib.render("research/plan", question=question, max_questions=max_questions)
            try:
                reply = await ask(ctx, planner, conversation(state, prompt), "plan")
            except (
                OutputParseError
            ) as exc:  # a small model's broken plan: research the question itself
                details["plan_error"] = str(exc)
                progress(
                    ctx, lead.name, "plan", "no usable plan; researching the question as asked"
                )
                questions = [question]
            else:
                entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="plan"))  # fmt: skip
                questions = parse_subquestions(reply.text, max_questions) or [question]
            details["questions"] = questions
            ctx.emit({"type": "round_started", "round": 1, "agents": [researcher.name] * len(questions)})  # fmt: skip
            findings = await ctx.map(lambda iq: team.investigate(ctx, iq[0], iq[1], entries, past), list(enumerate(questions)))  # fmt: skip
            details["findings"] = [asdict(f) for f in findings]
            conflicts = await reconcile(ctx, findings, store, checkers, lib, entries, past)
            details["conflicts"] = [asdict(c) | {"sentence": c.sentence()} for c in conflicts]
            details["findings"] = [asdict(f) for f in findings]
            details["votes"] = _votes(findings)
            if not any(f.claims for f in findings):
                return _done(NO_EVIDENCE, entries, details)
            sections = await ctx.map(lambda f: section(ctx, f, conflicts, entries, past), [f for f in findings if f.claims])  # fmt: skip
            draft = "\n\n".join(sections)
            report = await cite_and_verify(ctx, question, draft, conflicts, details, entries, past)
            if conflicts:
                said = "\n".join(f"- {c.sentence()}" for c in conflicts)
                head, sources = report.rsplit("\n\n## Sources", 1)
                report = f"{head}\n\n## Conflicting sources\n\n{said}\n\n## Sources{sources}"
        except BudgetExceeded as exc:
            details["partial"] = True
            details["error"] = str(exc)
            found = [c["text"] for f in details["findings"] for c in f["claims"] if not c["superseded"]]  # fmt: skip
            body = "\n".join(f"- {c}" for c in found) or NO_EVIDENCE
            report = f"# {question}\n\n**Partial report: the budget ran out.**\n\n{body}"
        return _done(report, entries, details)

    async def section(
        ctx: RunContext,
        finding: Finding,
        conflicts: list[Conflict],
        entries: list[Turn],
        past: Sequence[dict[str, Any]],
    ) -> str:
        claims = [asdict(c) for c in finding.claims if not c.superseded]
        settled = [asdict(c) for c in conflicts if c.question == finding.question and c.rule != "unsettled"]  # fmt: skip
        prompt = lib.render("research/section", question=finding.question, claims=claims, settled=settled, example_id=claims[0]["passages"][0])  # fmt: skip
        progress(ctx, writer.name, "write", f"writing the section on: {finding.question}")
        reply = await ask(
            ctx, writer, [*past, *user(prompt)], f"section/{fact_key(finding.question)[:40]}"
        )
        entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="section"))  # fmt: skip
        return f"## {finding.question}\n\n{reply.text.strip()}"

    async def cite_and_verify(
        ctx: RunContext,
        question: str,
        draft: str,
        conflicts: list[Conflict],
        details: dict[str, Any],
        entries: list[Turn],
        past: Sequence[dict[str, Any]],
    ) -> str:
        cited = resolve_citations(draft, store.passages())
        by_number = {s.number: s.passage_id for s in cited.sources}
        pairs = [
            (sentence.strip(), by_number[int(n)])
            for sentence in _SENTENCE.findall(cited.text)
            for n in dict.fromkeys(_CITE.findall(sentence))
        ]
        texts = {p.id: p.text for p in store.passages()}
        progress(ctx, verifier.name, "verify", f"checking {len(pairs)} (sentence, passage) pairs")

        async def check(item: tuple[int, tuple[str, str]]) -> dict[str, Any]:
            i, (claim, pid) = item
            prompt = lib.render("research/verify", passage=texts[pid], claim=_CITE.sub("", claim).strip())  # fmt: skip
            reply = await ask(ctx, judge, [*past, *user(prompt)], f"verify{i}", max_tokens=1)
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="verify"))  # fmt: skip
            p = yes_probability(reply)
            return {"claim": claim, "passage": pid, "p_yes": p, "supported": p >= threshold}

        verdicts = await ctx.map(check, list(enumerate(pairs)))
        unsupported = {v["claim"] for v in verdicts if not v["supported"]}
        text, stale = mark_superseded(cited, conflicts, store.passages())
        for claim in unsupported:
            text = text.replace(claim, f"{claim} *(unsupported)*", 1)
        details.update(
            citations=[asdict(s) for s in cited.sources],
            fabricated=cited.fabricated,
            kept=cited.kept,
            verdicts=verdicts,
            supported_rate=_rate(verdicts),
            unsupported_claims=sorted(unsupported),
            superseded_sentences=stale,
        )
        return f"# {question}\n\n{text}\n\n{cited.sources_markdown()}"

    graph = Graph(name)
    graph.add_node("research", run_all, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "research")
    graph.add_edge("research", END)
    return graph


async def reconcile(
    ctx: RunContext,
    findings: Sequence[Finding],
    store: EvidenceStore,
    checkers: Sequence[Agent],
    lib: PromptLibrary,
    entries: list[Turn],
    past: Sequence[dict[str, Any]] = (),
) -> list[Conflict]:
    """Settle each finding's disagreeing claims by the rule of ``_sources`` (the newer
    document wins, then more votes), ask ``checkers`` concurrently which side the
    report should use (their majority decides only what the rule cannot; each call
    gets ``past``, the conversation before the question, first), and mark the losing
    claim ``superseded`` (the writer no longer sees it)."""
    passages = store.passages()
    by_id = {p.id: p for p in passages}

    def side(claim: Claim) -> Side:
        document = by_id[claim.passages[0]].document
        date = document_date(document, [p for p in passages if p.document == document])
        return Side(claim.text, document, date, claim.votes, list(claim.passages))

    settled: list[tuple[Conflict, Claim, Claim]] = []
    for finding in findings:
        documents = [{by_id[i].document for i in c.passages} for c in finding.claims]
        claimed: set[int] = set()
        for i, j in find_conflicts([c.text for c in finding.claims], documents, finding.question):
            if i not in claimed and j not in claimed:  # one disagreement per claim
                claimed |= {i, j}
                a, b = finding.claims[i], finding.claims[j]
                settled.append((settle(finding.question, side(a), side(b)), a, b))

    async def check(item: tuple[int, tuple[Conflict, Agent]]) -> str:
        # every other checker sees the sides in the other order, so an agent that
        # always answers "B" (a small model's position bias) cannot agree every time
        n, (conflict, agent) = item
        swap = n % 2 == 1
        a, b = (conflict.kept, conflict.dropped) if swap else (conflict.dropped, conflict.kept)
        prompt = lib.render("research/conflict", fact_a=a.fact, document_a=a.document, date_a=a.date or "undated",
                            fact_b=b.fact, document_b=b.document, date_b=b.date or "undated")  # fmt: skip
        reply = await ask(ctx, agent, [*past, *user(prompt)], f"conflict{n}", max_tokens=2)
        entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="conflict"))  # fmt: skip
        pick = re.match(r"\W*([AB])\b", reply.text.strip().upper())
        if pick is None:
            return "unclear"
        return "kept" if (pick.group(1) == "A") == swap else "dropped"

    asks = [(c, agent) for c, _, _ in settled for agent in checkers]
    picks = await ctx.map(check, list(enumerate(asks)))
    for (conflict, _), pick in zip(asks, picks, strict=True):
        conflict.checks.append(pick)
    for conflict, a, b in settled:
        if conflict.rule == "unsettled":
            conflict.decide_by_checks()
        if conflict.rule != "unsettled":
            loser = a if conflict.dropped.fact == a.text else b
            loser.superseded = conflict.kept.fact
        progress(ctx, "reconcile", "conflict", conflict.sentence())
    return [c for c, _, _ in settled]


def mark_superseded(
    cited: CitedText, conflicts: Sequence[Conflict], passages: Sequence[Passage]
) -> tuple[str, list[dict[str, str]]]:
    """``cited.text`` with each sentence that states a settled conflict's dropped
    figure as current (``states_superseded``) marked in place, right after it, with
    the kept fact and a citation of its passage (added to ``cited``'s Sources when
    new); and one record per marked sentence. Code, not a model, so no wording of
    the writer's lets a stale figure through unmarked.

    Example:
        >>> from concilium.tools.evidence import Passage
        >>> old = Passage("r24.md#L1", "r24.md", "L1", "Revenue was EUR 46 million.", "h", 0)
        >>> new = Passage("r25.md#L1", "r25.md", "L1", "Revenue was EUR 69 million.", "h", 0)
        >>> conflict = settle(
        ...     "Revenue?",
        ...     Side("Revenue was EUR 46 million.", "r24.md", "2024", 1, [old.id]),
        ...     Side("Revenue was EUR 69 million.", "r25.md", "2025", 1, [new.id]),
        ... )
        >>> cited = resolve_citations("Revenue was EUR 46 million [r24.md#L1].", [old, new])
        >>> mark_superseded(cited, [conflict], [old, new])[0]
        'Revenue was EUR 46 million [1]. *(superseded by r25.md (2025), which gives "Revenue was EUR 69 million" [2])*'
    """
    by_id = {p.id: p for p in passages}
    documents = {s.number: s.document for s in cited.sources}
    settled = [c for c in conflicts if c.rule != "unsettled"]
    records: list[dict[str, str]] = []

    def mark(match: re.Match[str]) -> str:
        sentence = match.group(0)
        plain = _CITE.sub("", sentence)
        if plain.lstrip().startswith("#"):  # a section's heading, not a statement
            return sentence
        cites = {documents[int(n)] for n in _CITE.findall(sentence) if int(n) in documents}
        for conflict in settled:
            if states_superseded(plain, cites, conflict):
                source = next((by_id[i] for i in conflict.kept.passages if i in by_id), None)
                citation = f" [{cited.cite(source)}]" if source else ""
                sentence = f"{sentence} {conflict.marker(citation)}"
                records.append({"sentence": match.group(0).strip(), "stated": conflict.dropped.fact,
                                "document": conflict.dropped.document, "current": conflict.kept.fact,
                                "superseded_by": conflict.kept.document})  # fmt: skip
        return sentence

    return _SENTENCE.sub(mark, cited.text), records


def _votes(findings: list[Finding]) -> list[dict[str, Any]]:
    """Every fact with its votes across researchers and passages, most voted first."""
    tally: dict[str, dict[str, Any]] = {}
    for f in findings:
        for c in f.claims:
            row = tally.setdefault(fact_key(c.text), {"fact": c.text, "votes": 0, "questions": [], "superseded": c.superseded})  # fmt: skip
            row["votes"] += c.votes
            if f.question not in row["questions"]:
                row["questions"].append(f.question)
    return sorted(tally.values(), key=lambda r: -r["votes"])


def _rate(verdicts: list[dict[str, Any]]) -> float:
    return sum(v["supported"] for v in verdicts) / len(verdicts) if verdicts else 1.0


def _done(report: str, entries: list[Turn], details: dict[str, Any]) -> dict[str, Any]:
    return {"answer": report, "text": report, "transcript": entries, "details": details}


# -- workflow files -------------------------------------------------------------


class ResearchSpec(PatternSpec):
    """A research assistant over the workflow's ``tools: documents:`` folder."""

    kind: Literal["research"]
    lead: str
    researcher: str
    writer: str | None = None
    verifier: str | None = None
    max_questions: int = Field(default=4, ge=1, le=8)
    passages: int = Field(default=3, ge=1, le=10)
    max_steps: int = Field(default=10, ge=1, le=50, description="model and tool calls per researcher")  # fmt: skip
    threshold: float = Field(default=0.5, ge=0, le=1)
    decompose: int = Field(default=0, ge=0, le=8, description="search queries per researcher, searched concurrently (0: one planned query)")  # fmt: skip
    embedder: str | None = Field(
        default=None,
        description="an agent whose model is an embedding model served at {api_base}/embeddings "
        "(vLLM serves one): search becomes hybrid BM25 + embeddings, BM25 alone if it fails",
    )


_PROVIDERS = ("hosted_vllm/", "openai/", "vllm/")


def embedder_for(agent: Agent) -> Embedder:
    """An :data:`Embedder` over ``agent``'s model: its first ``api_base`` and its
    name as the server knows it (the litellm provider prefix removed). In a run of a
    bound workflow the run's endpoints decide where, as for every model call.

    Example:
        >>> from concilium.agents import Agent, ModelSpec
        >>> spec = ModelSpec("hosted_vllm/bge-small", api_base="http://127.0.0.1:8000/v1")
        >>> callable(embedder_for(Agent("embedder", spec)))
        True
    """
    own = _embedder_at(agent.name, agent.model)  # no api_base fails here, at build time

    async def embed(texts: list[str]) -> list[list[float]]:
        endpoints = current_ledger().endpoints
        if endpoints is None:
            return await own(texts)
        return await _embedder_at(agent.name, endpoints.resolve(agent.model))(texts)

    return embed


def _embedder_at(name: str, model: ModelSpec) -> Embedder:
    base = model.api_base
    first = base if isinstance(base, str) or base is None else (base[0] if base else None)
    if first is None:
        raise GraphError(
            f"research embedder {name!r}: its model {model.model!r} has no api_base; "
            "give the URL of an OpenAI-compatible server with /v1/embeddings"
        )
    prefix = next((p for p in _PROVIDERS if model.model.startswith(p)), "")
    return openai_embedder(first, model.model[len(prefix) :], api_key=model.api_key)


def store_for(search: Tool) -> EvidenceStore:
    """The evidence store behind the workflow's ``search`` tool (``tools: documents:``)."""
    owner = getattr(search.fn, "__self__", None)
    if isinstance(owner, EvidenceStore):
        return owner
    folder = getattr(owner, "folder", None)
    if folder is None:
        raise GraphError("research needs tools: {documents: FOLDER} in the workflow file")
    store = EvidenceStore(folder)
    store.refresh()
    return store


@register_pattern(ResearchSpec)
def _build(spec: ResearchSpec, b: Builder) -> Graph:
    why = "research calls it directly"
    lead = b.plain_agent(spec.lead, "lead", why=why)
    researcher = b.plain_agent(spec.researcher, "researcher", why=why)
    writer = b.plain_agent(spec.writer, "writer", why=why) if spec.writer else lead
    verifier = b.plain_agent(spec.verifier, "verifier", why=why) if spec.verifier else researcher
    registry = b.tools(["search"], "lead")
    store = store_for(registry.get("search"))
    if spec.embedder:
        # the workflow's own search tool shares this store, so it turns hybrid too
        store.embed = embedder_for(b.plain_agent(spec.embedder, "embedder", why=why))
        store.lexical_fallback = True
    return research(
        lead, researcher, writer, verifier, store,
        max_questions=spec.max_questions, passages=spec.passages, max_steps=spec.max_steps,
        threshold=spec.threshold, decompose=spec.decompose, prompts=b.prompts, name=b.name,
    )  # fmt: skip
