"""Division of labour: a manager with workers, and Chain-of-Agents
(``docs/methods.md#manager-worker``, ``docs/methods.md#chain-of-agents``).

``manager_worker``: the manager plans sub-tasks at run time as structured output
(``Plan``); every sub-task becomes its own concurrent branch (a LangGraph ``Send``),
run by the worker the plan names or, failing that, the next worker in turn; then
the manager combines the reports. A worker slot may hold any pattern.

``chain_of_agents`` (Zhang et al., 2024) for inputs longer than a worker's window:
the source is packed sentence by sentence into chunks of at most ``chunk_words``
words (a sentence that does not fit starts the next chunk, so none is lost);
workers read the chunks strictly in order, each passing on a summary (the
communication unit); the manager answers from the last summary only, never from
the source. The input is the source, and a last line starting with ``Question:``
(or the ``query`` argument) is the question.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field

from concilium._errors import GraphError
from concilium.agents import Agent
from concilium.graphs import END, START, Branch, Graph, RunContext
from concilium.graphs.kit import (
    AgentSlot,
    AnswerFormat,
    AnswerSpec,
    Builder,
    PatternOptions,
    PatternSpec,
    Respondent,
    Turn,
    ask,
    conversation,
    distinct_names,
    history,
    register_pattern,
    turn,
    user,
)
from concilium.prompts import PromptLibrary


class Subtask(BaseModel):
    task: str = Field(description="what to do, self-contained")
    worker: str = Field(default="", description="the worker's name, or empty")


class Plan(BaseModel):
    """The manager's plan (its structured output)."""

    subtasks: list[Subtask] = Field(min_length=1)


class _Assignment(TypedDict):
    """One planned sub-task in ``details["assignments"]``: who runs it (the planned
    worker if there is one by that name, else the next in turn)."""

    index: int
    task: str
    worker: str
    planned_worker: str


class _WorkOrder(_Assignment):
    """A ``work`` branch's input: its assignment, the question and the conversation
    before it (``kit.history``)."""

    question: str
    past: list[dict[str, Any]]


def manager_worker(
    manager: Agent,
    workers: Sequence[Respondent],
    *,
    max_subtasks: int = 5,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    name: str = "manager_worker",
) -> Graph:
    """A manager plans sub-tasks, workers run them concurrently, the manager combines.

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> plan = '{"subtasks": [{"task": "find x"}, {"task": "find y"}, {"task": "find z"}]}'
        >>> def did_it(agent, i, msgs):  # every worker
        ...     return f"{agent} did it"
        >>> fake = FakeModel({"boss": [plan, "x, y and z"]}, fn=did_it)
        >>> team = [Agent("w1", fake.spec()), Agent("w2", fake.spec())]
        >>> result = run_sync(manager_worker(Agent("boss", fake.spec()), team), "a task")
        >>> result.answer, [w["worker"] for w in result.details["assignments"]]
        ('x, y and z', ['w1', 'w2', 'w1'])
    """
    if not workers:
        raise GraphError("manager_worker needs at least one worker")
    if max_subtasks < 1:
        raise GraphError(f"manager_worker needs max_subtasks >= 1, got {max_subtasks}")
    names = distinct_names(workers, "manager_worker")
    by_name = dict(zip(names, workers, strict=True))
    planner = manager.with_options(output=Plan)
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib

    async def plan(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        text = lib.render(
            "manager_worker/plan",
            question=state["question"],
            workers=names,
            max_subtasks=max_subtasks,
        )
        reply = await ask(ctx, planner, conversation(state, text), "plan")
        planned: Plan = reply.parsed
        assignments = _assign(planned.subtasks[:max_subtasks], names)
        entry = turn(ctx, reply, text=reply.text, answer=None, prompt=text, step="plan")
        ctx.emit(
            {"type": "round_started", "round": 1, "agents": [a["worker"] for a in assignments]}
        )
        return {"transcript": [entry], "details": {"assignments": assignments,
                "planned": len(planned.subtasks)}}  # fmt: skip

    def fan_out(state: Mapping[str, Any]) -> list[Branch]:
        assignments: list[_Assignment] = state["details"]["assignments"]
        return [
            Branch("work", _WorkOrder(**a, question=state["question"], past=history(state)))
            for a in assignments
        ]

    async def work(payload: _WorkOrder, ctx: RunContext) -> dict[str, Any]:
        worker = by_name[payload["worker"]]
        text = lib.render("manager_worker/work", question=payload["question"], task=payload["task"])
        reply = await ask(ctx, worker, [*payload["past"], *user(text)], f"task{payload['index']}")
        entry = turn(ctx, reply, text=reply.text, answer=None, prompt=text, step="work",
                     index=payload["index"], task=payload["task"])  # fmt: skip
        return {"transcript": [entry]}

    async def synthesize(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        text = lib.render("manager_worker/synthesize", question=state["question"], answer_format=fmt.instruction,
                          reports=_reports(state["transcript"]))  # fmt: skip
        reply = await ask(ctx, manager, conversation(state, text), "synthesize")
        value = fmt.extract(reply.text)
        entry = turn(ctx, reply, text=reply.text, answer=value, prompt=text, step="synthesize")
        return {"answer": value, "text": reply.text, "transcript": [entry]}

    graph = Graph(opts.name)
    graph.add_node("plan", plan, writes=["transcript", "details"])
    graph.add_node("work", work, writes=["transcript"], parallel=True)
    graph.add_node("synthesize", synthesize, writes=["answer", "text", "transcript"])
    graph.add_edge(START, "plan")
    graph.add_route("plan", fan_out, ["work"])
    graph.add_edge("work", "synthesize")
    graph.add_edge("synthesize", END)
    return graph


def _assign(subtasks: Sequence[Subtask], names: Sequence[str]) -> list[_Assignment]:
    """Each sub-task to the worker the plan names, or else to the next in turn."""
    assignments: list[_Assignment] = []
    for i, sub in enumerate(subtasks):
        worker = sub.worker if sub.worker in names else names[i % len(names)]
        assignments.append(
            {"index": i, "task": sub.task, "worker": worker, "planned_worker": sub.worker}
        )
    return assignments


def _reports(transcript: Sequence[Turn]) -> list[dict[str, str]]:
    """The workers' reports, in sub-task order, as the manager reads them."""
    done = sorted(
        (e for e in transcript if e.get("step") == "work"), key=lambda e: e.get("index", 0)
    )
    return [{"worker": e["agent"], "task": e.get("task", ""), "text": e["text"]} for e in done]


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def chunk_sentences(text: str, chunk_words: int) -> list[str]:
    """Greedy sentence packing into chunks of at most ``chunk_words`` words; a
    sentence that does not fit starts the next chunk (one longer than a chunk is
    a chunk of its own).

    Example:
        >>> chunk_sentences("One two. Three four five. Six.", 4)
        ['One two.', 'Three four five. Six.']
    """
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be >= 1, got {chunk_words}")
    chunks: list[list[str]] = [[]]
    size = 0
    for sentence in (s for s in _SENTENCE.split(text.strip()) if s):
        words = len(sentence.split())
        if chunks[-1] and size + words > chunk_words:
            chunks.append([])
            size = 0
        chunks[-1].append(sentence)
        size += words
    return [" ".join(c) for c in chunks if c]


def split_query(text: str) -> tuple[str, str | None]:
    """``(source, question)``: the question is a last line starting with ``Question:``.

    Example:
        >>> split_query("Long text.\\nQuestion: who?")
        ('Long text.', 'who?')
    """
    head, sep, tail = text.rstrip().rpartition("\n")
    if sep and tail.lower().startswith("question:"):
        return head.rstrip(), tail.split(":", 1)[1].strip()
    return text, None


def chain_of_agents(
    worker: Respondent,
    manager: Respondent,
    *,
    chunk_words: int = 1500,
    query: str | None = None,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    name: str = "chain_of_agents",
) -> Graph:
    """Workers read the source chunk by chunk passing a summary on; the manager answers.

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(fn=lambda agent, i, msgs: f"{agent} note {i}")
        >>> coa = chain_of_agents(Agent("w", fake.spec()), Agent("m", fake.spec()), chunk_words=3)
        >>> result = run_sync(coa, "A b c. D e f. G h.\\nQuestion: what?")
        >>> result.details["chunks"], result.answer
        (3, 'm note 0')
    """
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib

    async def read(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        source, asked = split_query(state["question"])
        question = asked or query
        chunks = chunk_sentences(source, chunk_words)
        summary = ""
        entries: list[Turn] = []
        for i, chunk in enumerate(chunks):  # strictly in order: each reads the last summary
            text = lib.render(
                "chain_of_agents/worker", chunk=chunk, previous=summary, query=question
            )
            reply = await ask(ctx, worker, conversation(state, text), f"chunk{i}")
            summary = reply.text
            seen = f"chunk {i + 1} of {len(chunks)}"
            entries.append(turn(ctx, reply, text=summary, answer=None, prompt=seen, chunk=i))
        text = lib.render(
            "chain_of_agents/manager",
            summary=summary,
            query=question,
            answer_format=fmt.instruction,
        )
        reply = await ask(ctx, manager, conversation(state, text), "answer")
        value = fmt.extract(reply.text)
        entries.append(turn(ctx, reply, text=reply.text, answer=value, prompt=text, step="manager"))
        return {"answer": value, "text": reply.text, "transcript": entries,
                "details": {"chunks": len(chunks), "chunk_words": chunk_words, "question": question}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("read", read, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "read")
    graph.add_edge("read", END)
    return graph


# -- workflow files -------------------------------------------------------------


class ManagerWorkerSpec(PatternSpec):
    """A manager plans sub-tasks, workers run them concurrently, the manager combines."""

    kind: Literal["manager_worker"]
    manager: str = Field(description="an agent name (it plans with structured output)")
    workers: list[AgentSlot] = Field(min_length=1)
    max_subtasks: int = Field(default=5, ge=1, le=64)
    answer: AnswerSpec = "text"


class ChainOfAgentsSpec(PatternSpec):
    """Workers read a long input chunk by chunk passing a summary on; the manager answers."""

    kind: Literal["chain_of_agents"]
    worker: AgentSlot
    manager: AgentSlot
    chunk_words: int = Field(default=1500, ge=1)
    query: str | None = None
    answer: AnswerSpec = "text"


@register_pattern(ManagerWorkerSpec)
def _build_manager_worker(spec: ManagerWorkerSpec, b: Builder) -> Graph:
    manager = b.plain_agent(spec.manager, "manager", why="the manager plans with structured output")
    workers = [b.slot(a, "workers", i) for i, a in enumerate(spec.workers)]
    return manager_worker(manager, workers, max_subtasks=spec.max_subtasks, answer=b.answer(spec.answer),
                          prompts=b.prompts, name=b.name)  # fmt: skip


@register_pattern(ChainOfAgentsSpec)
def _build_chain_of_agents(spec: ChainOfAgentsSpec, b: Builder) -> Graph:
    return chain_of_agents(
        b.slot(spec.worker, "worker"), b.slot(spec.manager, "manager"), chunk_words=spec.chunk_words,
        query=spec.query, answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
