"""``concilium bench research``: the research assistant against a single-agent
baseline, side by side in one run, on the same questions of the project's synthetic
corpus (``concilium.tools.write_corpus``: a fictional organisation across Markdown,
HTML, PDF, DOCX and text files, with distractors and a stale annual report).

* assistant -- ``examples/research_assistant.yaml`` (kind ``research``): plan, parallel
  researchers, votes, sections written concurrently, the citation pass, the verifier;
* baseline -- one retrieval (the evidence store's BM25 search, as many passages as the
  assistant's researchers read) and one answer call, by the assistant's writer model,
  asked to cite passage IDs; its output is not filtered.

Measured per method, mechanically:

* fact recall: gold facts found (case-insensitive substring) in the answer's body
  (the report's headings and Sources list left out), over all gold facts;
* citation precision: cited passages in the store that are a gold supporting
  passage or contain a gold fact, over all citations in the output;
* fabricated-citation rate: citations in the output naming no passage of the store
  (the assistant's ``[n]`` are resolved through its Sources list, so this is
  measured, not assumed); the IDs the assistant's citation pass removed are
  counted apart as ``removed``;
* unsupported-claim rate: (sentence, cited passage) pairs the yes/no verifier
  judged unsupported. The assistant's own verifier verdicts; the baseline's pairs
  are checked by the same verifier agent with the same prompt after its run (those
  calls are ``check_calls``, not the baseline's), a fabricated ID being unsupported;
* calls, tokens (prompt + completion) per question, and wall time in total.

With ``--backend sim`` the replies are scripted (a test double, and the table says
so): the assistant's script states each supporting passage's fact and its writer
cites one invented ID the citation pass must remove; the baseline's script states
the gold fact when its retrieval found the gold passage (citing an invented ID on
the last question), else the first retrieved passage's first sentence. Those
numbers check the measuring, not the methods; ``--backend local`` (the embedded
engine) or a URL give real ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import yaml

from concilium._errors import ConciliumError, UserError
from concilium.agents import Agent
from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
from concilium.app import Backend, Session, load
from concilium.bench._report import emit
from concilium.examples import FOLDER
from concilium.graphs import END, START, Graph, RunContext, RunResult, run
from concilium.graphs.kit import ask, prompt_library, turn, user
from concilium.graphs.patterns import resolve_citations, yes_probability
from concilium.graphs.workflows import Workflow
from concilium.tools.evidence import (
    CorpusQuestion,
    EvidenceStore,
    Passage,
    default_index_path,
    write_corpus,
)

EXAMPLE = FOLDER / "research_assistant.yaml"
BASELINE = "baseline"
INVENTED = "reports/annual_report_2023.pdf#p9"
"""The ID the scripted assistant writer and baseline invent (no such document)."""
BASELINE_PROMPT = """\
Answer the question from the passages below in one or two sentences. After each \
sentence, cite the passage ID in brackets exactly as given, e.g. [{example}].

Passages:
{passages}

Question: {question}
Answer:"""
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+(?:\s*\[\d+\])*|$)")
_NUMBER = re.compile(r"\s?\[(\d+)\]")


class MethodRow(TypedDict):
    """One method's figures over the questions (rates are None with nothing to count)."""

    method: str
    questions: int
    fact_recall: float
    citation_precision: float | None
    fabricated_rate: float | None
    unsupported_rate: float | None
    citations: int
    fabricated: int
    removed: int
    checked_pairs: int
    check_calls: int
    calls_per_question: float
    tokens_per_question: float
    wall_s: float
    failed: int


def own_lines(reply: str, prompt: str) -> str:
    """The reply without the lines it copied verbatim from its prompt: a base model that
    continues a prompt echoes its passages, and an echoed passage is no answer (its
    facts and IDs would otherwise count as found and cited).

    Example:
        >>> own_lines(
        ...     "Maren Solberg [h#L3].\\n[h#L3] Our chief executive is Maren Solberg.",
        ...     "Passages:\\n[h#L3] Our chief executive is Maren Solberg.\\nAnswer:",
        ... )
        'Maren Solberg [h#L3].'
    """
    copied = {line.strip() for line in prompt.splitlines() if line.strip()}
    return "\n".join(ln for ln in reply.strip().splitlines() if ln.strip() not in copied).strip()


def baseline(agent: Agent, store: EvidenceStore, *, passages: int = 3) -> Graph:
    """One retrieval and one answer citing passage IDs: the single-agent baseline.
    Its answer is the reply's own lines (``own_lines``), not what it echoed."""

    async def answer(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question: str = state["question"]
        hits = await store.search(question, k=passages)
        if not hits:
            return {"answer": "", "text": "", "transcript": [], "details": {"retrieved": []}}
        listed = "\n".join(f"[{h.passage.id}] {h.passage.text}" for h in hits)
        prompt = BASELINE_PROMPT.format(
            example=hits[0].passage.id, passages=listed, question=question
        )
        reply = await ask(ctx, agent, user(prompt), "answer")
        text = own_lines(reply.text, prompt)
        entry = turn(ctx, reply, text=reply.text, answer=text, prompt=prompt, step="answer")
        details = {"retrieved": [h.passage.id for h in hits]}
        return {"answer": text, "text": text, "transcript": [entry], "details": details}

    graph = Graph(BASELINE)
    graph.add_node("answer", answer, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph


# -- the workflow file and its script -------------------------------------------------


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _fact_line(text: str, facts: list[str]) -> str:
    """The passage's sentences that state a gold fact."""
    return " ".join(s for s in _sentences(text) if any(f in s for f in facts)) or text.strip()


def _baseline_says(q: CorpusQuestion, seen: list[str], texts: dict[str, str], last: bool) -> str:  # fmt: skip
    """The scripted baseline: the gold passage's fact citing it when its one retrieval
    found that passage (an invented ID instead on the last question), else the first
    retrieved passage's first sentence citing that passage."""
    if q.supports[0] in seen:
        fact = _fact_line(texts[q.supports[0]], q.gold_facts)
        return f"{fact} [{INVENTED if last else q.supports[0]}]"
    if seen:
        return f"{_sentences(texts[seen[0]])[0]} [{seen[0]}]"
    return "The passages do not say."


def _script(questions: list[CorpusQuestion], texts: dict[str, str], roles: dict[str, str], seen: dict[str, list[str]]) -> list[dict[str, Any]]:  # fmt: skip
    """Simulated-server rules: the assistant states and cites each gold passage its
    researchers read (its writer also cites INVENTED once); the baseline answers from
    what its retrieval returned (``seen``: passage IDs per question)."""
    rules: list[dict[str, Any]] = []
    for i, q in enumerate(questions):
        asked = re.escape(q.question)
        fact = _fact_line(texts[q.supports[0]], q.gold_facts)
        invented = f" [{INVENTED}]" if i == 0 else ""
        said = _baseline_says(q, seen[q.id], texts, last=i == len(questions) - 1)
        rules += [
            {
                "agent": roles["lead"],
                "match": f"Question: {asked}",
                "replies": [json.dumps({"questions": [q.question]})],
            },
            {
                "agent": roles["researcher"],
                "match": f"(?s)Rewrite this question.*{asked}",
                "replies": [q.question.rstrip("?")],
            },
            {
                "agent": roles["researcher"],
                "match": f"(?s)Sub-question: {asked}\\s+Passage: .*{re.escape(q.gold_facts[0])}",
                "replies": [fact],
            },
            {
                "agent": roles["writer"],
                "match": f"answering: {asked}",
                "replies": [f"{fact} [{q.supports[0]}]{invented}"],
            },
            {"agent": BASELINE, "match": f"Question: {asked}", "replies": [said]},
        ]
    rules += [
        {"agent": roles["researcher"], "replies": ["NONE"]},
        {"agent": roles["verifier"], "replies": ["Yes"]},
        {"agent": BASELINE, "replies": ["The passages do not say."]},
    ]
    return rules


def load_research_workflow(example: Path = EXAMPLE) -> dict[str, Any]:
    """The research workflow file's data (checked to be of kind research)."""
    if not example.is_file():
        raise UserError(
            f"{example} is missing; give a research workflow file (--workflow) or run the bench "
            "from a concilium checkout (it reads the shipped example)"
        )
    data = yaml.safe_load(example.read_text("utf-8"))
    if not isinstance(data, dict) or (data.get("workflow") or {}).get("kind") != "research":
        raise UserError(f"{example} is not a workflow of kind research; pass one with --workflow")
    return data


async def _workflow_data(store: EvidenceStore, questions: list[CorpusQuestion], data: dict[str, Any]) -> tuple[dict[str, Any], str, int]:  # fmt: skip
    """The research workflow ``data`` with the store's folder as its documents, a
    ``baseline`` agent (the writer's settings) and the script for the simulated
    server; with the verifier's agent name and the passages each researcher reads."""
    data = dict(data)
    flow = data["workflow"]
    roles = {
        "lead": flow["lead"],
        "researcher": flow["researcher"],
        "writer": flow.get("writer") or flow["lead"],
        "verifier": flow.get("verifier") or flow["researcher"],
    }
    passages = int(flow.get("passages", 3))
    texts = {p.id: p.text for p in store.passages()}
    seen = {q.id: [h.passage.id for h in await store.search(q.question, k=passages)] for q in questions}  # fmt: skip
    data["agents"][BASELINE] = dict(data["agents"][roles["writer"]])
    data["tools"] = {**(data.get("tools") or {}), "documents": str(store.folder)}
    data["simulate"] = {**(data.get("simulate") or {}), "rules": _script(questions, texts, roles, seen)}  # fmt: skip
    return data, roles["verifier"], passages


# -- measuring ------------------------------------------------------------------------


def _body(report: str) -> str:
    """The answer without headings and the Sources list (file names are not facts)."""
    text = report.split("## Sources")[0]
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))


def _cited_ids(text: str, passages: list[Passage]) -> list[str]:
    """The IDs ``text`` cites, known or not, by the assistant's own citation rules
    (``resolve_citations``: ``[simulated reply]`` or ``[a link](...)`` are no citations)."""
    cited = resolve_citations(text, passages)
    return list(dict.fromkeys([*(s.passage_id for s in cited.sources), *cited.fabricated]))


def _relevant(pid: str, q: CorpusQuestion, texts: dict[str, str]) -> bool:
    return pid in q.supports or any(f in texts.get(pid, "") for f in q.gold_facts)


async def _check_baseline(answer: str, verifier: Agent, passages: list[Passage]) -> tuple[list[bool], int]:  # fmt: skip
    """Verdicts on the baseline's (sentence, cited passage) pairs, and the calls made:
    each citation of an unknown ID is an unsupported pair, without a call."""
    lib = prompt_library(None)
    judge = verifier.with_options(logprobs=True, top_logprobs=5) if verifier.model.capabilities.logprobs else verifier  # fmt: skip
    texts = {p.id: p.text for p in passages}
    cited = resolve_citations(answer, passages)
    by_number = {s.number: s.passage_id for s in cited.sources}
    verdicts = [False for _ in dict.fromkeys(cited.fabricated)]
    calls = 0
    for sentence in _SENTENCE.findall(cited.text):
        claim = _NUMBER.sub("", sentence).strip()
        for n in dict.fromkeys(_NUMBER.findall(sentence)):
            passage = texts[by_number[int(n)]]
            prompt = lib.render("research/verify", passage=passage, claim=claim)
            reply = await judge.run(user(prompt), max_tokens=1)
            calls += 1
            verdicts.append(yes_probability(reply) >= 0.5)
    return verdicts, calls


def _item(q: CorpusQuestion, result: RunResult, cited: list[str], texts: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    body = _body(result.answer or "").lower()
    return {
        "id": q.id,
        "question": q.question,
        "answer": result.answer or "",
        "gold_facts": q.gold_facts,
        "found": [f for f in q.gold_facts if f.lower() in body],
        "cited": cited,
        "relevant": [c for c in cited if c in texts and _relevant(c, q, texts)],
        "fabricated": [c for c in cited if c not in texts],
        "calls": result.calls,
        "tokens": result.usage.prompt_tokens + result.usage.completion_tokens,
        "elapsed_s": round(result.elapsed_s, 3),
    }


def _assistant_cited(result: RunResult) -> list[str]:
    """The output's ``[n]`` resolved through its Sources list (an unlisted n stays ``[n]``)."""
    sources = {int(s["number"]): str(s["passage_id"]) for s in result.details.get("citations", [])}
    numbers = dict.fromkeys(int(n) for n in re.findall(r"\[(\d+)\]", _body(result.answer or "")))
    return [sources.get(n, f"[{n}]") for n in numbers]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def _summary(method: str, items: list[dict[str, Any]]) -> MethodRow:
    n = len(items)
    cited = sum(len(i["cited"]) for i in items)
    fabricated = sum(len(i["fabricated"]) for i in items)
    verdicts = [v for i in items for v in i["verdicts"]]
    return {
        "method": method,
        "questions": n,
        "fact_recall": round(
            sum(len(i["found"]) for i in items) / max(1, sum(len(i["gold_facts"]) for i in items)),
            3,
        ),
        "citation_precision": _rate(sum(len(i["relevant"]) for i in items), cited),
        "fabricated_rate": _rate(fabricated, cited),
        "unsupported_rate": _rate(sum(not v for v in verdicts), len(verdicts)),
        "citations": cited,
        "fabricated": fabricated,
        "removed": sum(i.get("removed", 0) for i in items),
        "checked_pairs": len(verdicts),
        "check_calls": sum(i.get("check_calls", 0) for i in items),
        "calls_per_question": round(sum(i["calls"] for i in items) / n, 2) if n else 0.0,
        "tokens_per_question": round(sum(i["tokens"] for i in items) / n, 1) if n else 0.0,
        "wall_s": round(sum(i["elapsed_s"] for i in items), 3),
        "failed": sum("error" in i for i in items),
    }


async def _bench(wf: Workflow, store: EvidenceStore, questions: list[CorpusQuestion], verifier_name: str, passages: int) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    known = store.passages()
    texts = {p.id: p.text for p in known}
    verifier = wf.agents[verifier_name]
    # the baseline is a graph of its own, served where the workflow is bound; the
    # verifier's checks of it run outside any graph, in a ledger bound the same way
    single = baseline(wf.agents[BASELINE], store, passages=passages).served_at(wf.endpoints)
    token = use_ledger(CallLedger(endpoints=wf.endpoints))

    async def assistant_item(q: CorpusQuestion) -> dict[str, Any]:
        result = await run(wf.graph, q.question, budget=wf.budget)
        item = _item(q, result, _assistant_cited(result), texts)
        item["removed"] = len(result.details.get("fabricated", []))
        item["verdicts"] = [bool(v["supported"]) for v in result.details.get("verdicts", [])]
        item["partial"] = bool(result.details.get("partial")) or result.partial
        return item

    async def baseline_item(q: CorpusQuestion) -> dict[str, Any]:
        result = await run(single, q.question)
        item = _item(q, result, _cited_ids(result.answer or "", known), texts)
        item["verdicts"], item["check_calls"] = await _check_baseline(result.answer or "", verifier, known)  # fmt: skip
        return item

    methods = {"assistant": assistant_item, "baseline": baseline_item}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for q in questions:
        for name, measure_one in methods.items():
            try:
                out[name].append(await measure_one(q))
            except ConciliumError as exc:  # a failed question is a row, not the end of the table
                out[name].append(_failed(q, exc))
    reset_ledger(token)
    return out


def _failed(q: CorpusQuestion, exc: ConciliumError) -> dict[str, Any]:
    """A question whose run raised: nothing found or cited, the error kept."""
    return {"id": q.id, "question": q.question, "answer": "", "gold_facts": q.gold_facts,
            "found": [], "cited": [], "relevant": [], "fabricated": [], "calls": 0, "tokens": 0,
            "elapsed_s": 0.0, "verdicts": [], "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip


async def measure(
    backend: Backend, questions: int, seed: int, workflow: Path = EXAMPLE
) -> dict[str, Any]:
    data = load_research_workflow(workflow)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        manifest = write_corpus(corpus, seed=seed)
        chosen = manifest.questions[:questions]
        store = EvidenceStore(corpus, path=Path(tmp) / "index.sqlite")
        store.refresh()
        try:
            texts = {p.id: p.text for p in store.passages()}
            bench_data, verifier, passages = await _workflow_data(store, chosen, data)
            built = load(bench_data, base_dir=store.folder.parent)
            async with Session(backend) as session:
                items = await _bench(await session.bind(built), store, chosen, verifier, passages)
        finally:
            store.close()
            # the assistant's own store indexed the temporary corpus in the user's cache
            default_index_path(corpus).unlink(missing_ok=True)
    return {
        "backend": backend.label,
        "workflow": str(workflow),
        "seed": seed,
        "questions": len(chosen),
        "documents": len(manifest.documents),
        "passages": len(texts),
        "methods": [_summary(name, rows) for name, rows in items.items()],
        "items": items,
    }


def _cell(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0%}" if percent else f"{value:g}"


def main(
    *,
    backend: str | None = "sim",
    questions: int = 8,
    seed: int = 0,
    json_file: str | None = None,
    workflow: str | None = None,
) -> dict[str, Any]:
    """Run both methods on the first ``questions`` questions, print the table and the
    JSON line, write the JSON to ``json_file`` if given, and return the figures.
    ``workflow``: the research workflow file (default the shipped example)."""
    chosen = Backend.parse(backend or "sim")
    figures = asyncio.run(measure(chosen, questions, seed, Path(workflow) if workflow else EXAMPLE))
    print(
        f"{figures['questions']} questions on the synthetic corpus (seed {seed}: "
        f"{figures['documents']} documents, {figures['passages']} passages); backend: {figures['backend']}"
    )
    if chosen.kind == "sim":
        print("(scripted replies: these figures check the measuring, not the methods)")
    print(
        "| method | fact recall | citation precision | fabricated citations | unsupported claims "
        "| calls/question | tokens/question | wall s |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in figures["methods"]:
        print(
            f"| {r['method']} | {_cell(r['fact_recall'])} | {_cell(r['citation_precision'])} | "
            f"{_cell(r['fabricated_rate'])} ({r['fabricated']}/{r['citations']}) | "
            f"{_cell(r['unsupported_rate'])} ({r['checked_pairs']} pairs) | "
            f"{_cell(r['calls_per_question'], False)} | {_cell(r['tokens_per_question'], False)} | "
            f"{r['wall_s']:.2f} |"
        )
    for r in figures["methods"]:
        if r["failed"]:
            errors = {i["error"] for i in figures["items"][r["method"]] if "error" in i}
            print(f"{r['method']}: {r['failed']} question(s) failed (counted as nothing found): {'; '.join(sorted(errors))[:400]}")  # fmt: skip
    assistant = figures["methods"][0]
    print(
        f"assistant: {assistant['removed']} invented ID(s) removed by the citation pass before output; "
        f"baseline: {figures['methods'][1]['check_calls']} verifier calls to check its claims (not counted above)"
    )
    emit(figures, json_file)
    return figures
