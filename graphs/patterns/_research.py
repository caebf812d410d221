"""A research assistant over a local document folder (issue 13).

A lead plans sub-questions (JSON, under guided decoding when the model has
structured output, else parsed leniently from lines); one researcher per
sub-question runs concurrently: it searches the store with the sub-question and
its own reformulation, then asks one short call per retrieved passage for the fact
it states (map) and merges equal facts (reduce), so every claim carries the IDs of
the passages it came from, attached by code rather than written by the model.
Facts are reconciled by vote across passages and researchers. A writer drafts one
section per sub-question concurrently (Skeleton-of-Thought), citing passage IDs;
the deterministic citation pass (``_citations.py``) removes unknown IDs and
numbers the rest; a yes/no verifier checks every (sentence, cited passage) pair,
P(yes) read from token logprobs where the server gives them. A sub-question with
no retrieved passage answers ``NO_EVIDENCE`` instead of writing; a run out of
budget returns what it has, marked partial.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from concilium import BudgetExceeded, GraphError
from concilium.agents import Agent, AgentReply
from concilium.graphs import (
    END,
    START,
    Builder,
    Graph,
    PatternSpec,
    RunContext,
    Turn,
    ask,
    prompt_library,
    register_pattern,
    turn,
    user,
)
from concilium.prompts import PromptLibrary
from concilium.tools import EvidenceStore, Passage, Tool

from ._best_of_n import yes_probability
from ._citations import resolve_citations

NO_EVIDENCE = "no evidence found in the folder"
_LINE = re.compile(r"^\s*(?:[-*]|\d+[.)])?\s*(.+?)\s*$")
_CITE = re.compile(r"\[(\d+)\]")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+(?:\s*\[\d+\])*|$)")


class SubQuestions(BaseModel):
    """The lead's plan (its structured output)."""

    questions: list[str] = Field(min_length=1, max_length=8)


@dataclass
class Claim:
    """A fact one researcher found, the passages that state it and its votes."""

    text: str
    passages: list[str]
    votes: int = 1


@dataclass
class Finding:
    """One researcher's result: its sub-question, query, claims and agreement."""

    question: str
    query: str = ""
    retrieved: list[str] = field(default_factory=list[str])
    claims: list[Claim] = field(default_factory=list[Claim])
    agreement: float = 0.0
    note: str = ""


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
        data = json.loads(text[text.find("{") : text.rfind("}") + 1] or text)
        items = data.get("questions", []) if isinstance(data, dict) else data
        found = [str(q).strip() for q in items if str(q).strip()]
    except (ValueError, AttributeError, TypeError):
        for line in text.splitlines():
            match = _LINE.match(line)
            if match and match.group(1).endswith("?"):
                found.append(match.group(1))
    return list(dict.fromkeys(found))[:limit]


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def research(  # noqa: C901 (one closure per stage, read in order)
    lead: Agent,
    researcher: Agent,
    writer: Agent,
    verifier: Agent,
    store: EvidenceStore,
    *,
    max_questions: int = 4,
    passages: int = 3,
    threshold: float = 0.5,
    prompts: PromptLibrary | None = None,
    name: str = "research",
) -> Graph:
    """Plan, research concurrently, vote, write concurrently, cite, verify.

    The answer is the Markdown report; ``details`` holds the sub-questions,
    findings (claims with passage IDs and votes), citations, fabricated IDs
    removed, verdicts, rates and ``partial``.
    """
    if max_questions < 1 or passages < 1:
        raise GraphError(
            f"research needs max_questions >= 1 and passages >= 1, got {max_questions}, {passages}"
        )
    lib = prompt_library(prompts)
    planner = lead.with_options(output=SubQuestions) if lead.model.capabilities.structured_output else lead  # fmt: skip
    judge = verifier.with_options(logprobs=True, top_logprobs=5) if verifier.model.capabilities.logprobs else verifier  # fmt: skip

    async def run_all(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question: str = state["question"]
        entries: list[Turn] = []
        details: dict[str, Any] = {"partial": False, "questions": [], "findings": []}
        try:
            prompt = lib.render("research/plan", question=question, max_questions=max_questions)
            reply = await ask(ctx, planner, user(prompt), "plan")
            entries.append(
                turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="plan")
            )
            questions = parse_subquestions(reply.text, max_questions) or [question]
            details["questions"] = questions
            ctx.emit({"type": "round_started", "round": 1, "agents": [researcher.name] * len(questions)})  # fmt: skip
            findings = await ctx.map(lambda iq: investigate(ctx, iq[0], iq[1], entries), list(enumerate(questions)))  # fmt: skip
            details["findings"] = [asdict(f) for f in findings]
            details["votes"] = _votes(findings)
            if not any(f.claims for f in findings):
                return _done(NO_EVIDENCE, entries, details)
            sections = await ctx.map(lambda f: section(ctx, f, entries), [f for f in findings if f.claims])  # fmt: skip
            draft = "\n\n".join(sections)
            report = await cite_and_verify(ctx, question, draft, details, entries)
        except BudgetExceeded as exc:
            details["partial"] = True
            details["error"] = str(exc)
            found = [c["text"] for f in details["findings"] for c in f["claims"]]
            body = "\n".join(f"- {c}" for c in found) or NO_EVIDENCE
            report = f"# {question}\n\n**Partial report: the budget ran out.**\n\n{body}"
        return _done(report, entries, details)

    async def investigate(
        ctx: RunContext, index: int, question: str, entries: list[Turn]
    ) -> Finding:
        prompt = lib.render("research/query", question=question)
        reply = await ask(ctx, researcher, user(prompt), f"q{index}/query")
        entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="query", index=index))  # fmt: skip
        query = reply.text.strip().splitlines()[0] if reply.text.strip() else question
        hits: dict[str, Passage] = {}
        for q in (question, query):
            for hit in await store.search(q):
                hits.setdefault(hit.passage.id, hit.passage)
        chosen = list(hits.values())[:passages]
        finding = Finding(question, query, [p.id for p in chosen])
        if not chosen:
            finding.note = NO_EVIDENCE
            return finding

        async def extract(item: tuple[int, Passage]) -> tuple[str, AgentReply, Passage]:
            i, passage = item
            text = lib.render("research/extract", question=question, text=passage.text)
            return text, await ask(ctx, researcher, user(text), f"q{index}/p{i}"), passage

        done = await ctx.map(extract, list(enumerate(chosen)))
        merged: dict[str, Claim] = {}
        for text, reply, passage in done:
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text, step="extract", index=index))  # fmt: skip
            fact = reply.text.strip()
            if not fact or fact.upper().startswith("NONE"):
                continue
            claim = merged.setdefault(_key(fact), Claim(fact, [], 0))
            claim.votes += 1
            if passage.id not in claim.passages:
                claim.passages.append(passage.id)
        finding.claims = sorted(merged.values(), key=lambda c: -c.votes)
        total = sum(c.votes for c in finding.claims)
        finding.agreement = finding.claims[0].votes / total if total else 0.0
        if not finding.claims:
            finding.note = NO_EVIDENCE
        return finding

    async def section(ctx: RunContext, finding: Finding, entries: list[Turn]) -> str:
        claims = [asdict(c) for c in finding.claims]
        prompt = lib.render("research/section", question=finding.question, claims=claims, example_id=claims[0]["passages"][0])  # fmt: skip
        reply = await ask(ctx, writer, user(prompt), f"section/{_key(finding.question)[:40]}")
        entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="section"))  # fmt: skip
        return f"## {finding.question}\n\n{reply.text.strip()}"

    async def cite_and_verify(
        ctx: RunContext, question: str, draft: str, details: dict[str, Any], entries: list[Turn]
    ) -> str:
        cited = resolve_citations(draft, store.passages())
        by_number = {s.number: s.passage_id for s in cited.sources}
        pairs = [
            (sentence.strip(), by_number[int(n)])
            for sentence in _SENTENCE.findall(cited.text)
            for n in dict.fromkeys(_CITE.findall(sentence))
        ]
        texts = {p.id: p.text for p in store.passages()}

        async def check(item: tuple[int, tuple[str, str]]) -> dict[str, Any]:
            i, (claim, pid) = item
            prompt = lib.render("research/verify", passage=texts[pid], claim=_CITE.sub("", claim).strip())  # fmt: skip
            reply = await ask(ctx, judge, user(prompt), f"verify{i}", max_tokens=1)
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="verify"))  # fmt: skip
            p = yes_probability(reply)
            return {"claim": claim, "passage": pid, "p_yes": p, "supported": p >= threshold}

        verdicts = await ctx.map(check, list(enumerate(pairs)))
        unsupported = {v["claim"] for v in verdicts if not v["supported"]}
        text = cited.text
        for claim in unsupported:
            text = text.replace(claim, f"{claim} *(unsupported)*", 1)
        details.update(
            citations=[asdict(s) for s in cited.sources],
            fabricated=cited.fabricated,
            kept=cited.kept,
            verdicts=verdicts,
            supported_rate=_rate(verdicts),
            unsupported_claims=sorted(unsupported),
        )
        return f"# {question}\n\n{text}\n\n{cited.sources_markdown()}"

    graph = Graph(name)
    graph.add_node("research", run_all, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "research")
    graph.add_edge("research", END)
    return graph


def _votes(findings: list[Finding]) -> list[dict[str, Any]]:
    """Every fact with its votes across researchers and passages, most voted first."""
    tally: dict[str, dict[str, Any]] = {}
    for f in findings:
        for c in f.claims:
            row = tally.setdefault(_key(c.text), {"fact": c.text, "votes": 0, "questions": []})
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
    threshold: float = Field(default=0.5, ge=0, le=1)


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
    return research(
        lead, researcher, writer, verifier, store_for(registry.get("search")),
        max_questions=spec.max_questions, passages=spec.passages, threshold=spec.threshold,
        prompts=b.prompts, name=b.name,
    )  # fmt: skip
