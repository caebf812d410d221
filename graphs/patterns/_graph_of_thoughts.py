"""Graph of Thoughts (Besta et al., AAAI 2024; ``docs/methods.md#graph-of-thoughts``).

A graph of operations (GoO), declared in order, each consuming the thoughts of its
``inputs``: ``split`` (mechanical: a list of digits cut into ``k`` contiguous parts),
``generate`` (one prompt per input thought, ``k`` samples in one request),
``aggregate`` (all input thoughts in one prompt, ``k`` samples), ``score`` (a
mechanical scorer, no model: ``sort_errors``) and ``keep_best`` (the ``k``
lowest-scored, stable). Unlike the reference's one-at-a-time controller, the GoO
runs as a DAG: an operation starts the moment its inputs are done, beside any
others in flight. Its ``wave`` (the transcript's round) is its depth in the GoO:
1 with no inputs, else one past its deepest input; the transcript lists the waves
in order, each in declaration order.

Choices where the reference differs or is silent: the split is mechanical (the
reference asks the model for JSON halves; a bad split there only costs a
re-score); a thought's ``original`` is the list it must sort (a part's sublist, an
aggregate's concatenated inputs), so ``sort_errors`` needs no ground truth beyond
the input; a "refine" is a ``generate`` with the refine template, and scoring the
refinements together with the kept merge (two inputs) keeps the "cannot get
worse" edge. The answer is the best-scored thought of the last operation.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from concilium._errors import GraphError
from concilium.graphs import END, START, DagNode, Graph, RunContext, run_dag
from concilium.graphs.kit import (
    AgentSlot,
    Builder,
    PatternSpec,
    Respondent,
    Turn,
    ask,
    history,
    prompt_library,
    register_pattern,
    turn,
    user,
)
from concilium.prompts import PromptLibrary

UNPARSEABLE = 300.0
_LIST = re.compile(r"\[[\d,\s]*\]")


class Operation(BaseModel):
    """One node of the graph of operations.

    Attributes:
        id: unique name, referred to by later operations' ``inputs``.
        op: ``split``, ``generate``, ``aggregate``, ``score`` or ``keep_best``.
        inputs: ids of earlier operations (none: the problem itself).
        k: parts (split), samples (generate, aggregate) or thoughts kept (keep_best).
        prompt: template of ``generate`` / ``aggregate``.
        part: ``generate`` only on the input thoughts of this 1-based part.
        scorer: the mechanical scorer of ``score``.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    op: Literal["split", "generate", "aggregate", "score", "keep_best"]
    inputs: list[str] = Field(default_factory=list[str])
    k: int = Field(default=1, ge=1, le=64)
    prompt: str | None = None
    part: int | None = Field(default=None, ge=1)
    scorer: Literal["sort_errors"] = "sort_errors"


class Thought(TypedDict):
    """A state of the problem: the text so far, the list it must sort, its part
    (1-based, 0 for the whole problem) and its score once scored (lower is better)."""

    current: str
    original: str
    part: int
    score: float | None


def digits(text: str) -> list[int]:
    """The digits of a text, in order.

    Example:
        >>> digits("[3, 1, 2]")
        [3, 1, 2]
    """
    return [int(c) for c in re.findall(r"\d", text)]


def sort_errors(current: str, original: str) -> float:
    """The reference's ``num_errors``: per digit, |count in the output - count in
    ``original``|, plus one per adjacent descending pair; 300 when ``current`` has
    no bracketed list.

    Example:
        >>> sort_errors("[1, 2, 2]", "[2, 1, 2]"), sort_errors("[2, 1]", "[1, 2, 3]")
        (0.0, 2.0)
    """
    found = _LIST.findall(current)
    if not found:
        return UNPARSEABLE
    out, ref = Counter(digits(found[-1])), Counter(digits(original))
    seq = digits(found[-1])
    missing = sum(abs(out[d] - ref[d]) for d in range(10))
    return float(missing + sum(a > b for a, b in pairwise(seq)))


SCORERS: dict[str, Callable[[str, str], float]] = {"sort_errors": sort_errors}


def _as_list(values: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, values)) + "]"


def _parsed(text: str) -> str:
    """The last bracketed list of a reply, normalised; the reply itself if none."""
    found = _LIST.findall(text)
    return _as_list(digits(found[-1])) if found else text.strip()


def check_operations(ops: Sequence[Operation]) -> None:
    """Load-time checks: unique ids, inputs declared earlier, prompts where needed,
    inputs where needed.

    Example:
        >>> check_operations([Operation(id="s", op="score", inputs=["g"])])
        Traceback (most recent call last):
        concilium._errors.GraphError: graph_of_thoughts operation 's' has input 'g', which is not an earlier operation; earlier: []
    """
    seen: list[str] = []
    for op in ops:
        if op.id in seen:
            raise GraphError(f"graph_of_thoughts operation id {op.id!r} is used twice; rename one")
        for name in op.inputs:
            if name not in seen:
                close = difflib.get_close_matches(name, seen, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; earlier: {seen}"
                raise GraphError(
                    f"graph_of_thoughts operation {op.id!r} has input {name!r}, "
                    f"which is not an earlier operation{hint}"
                )
        if op.op in ("generate", "aggregate") and op.prompt is None:
            raise GraphError(f"graph_of_thoughts {op.op} {op.id!r} needs a prompt: template")
        if op.op in ("aggregate", "score", "keep_best") and not op.inputs:
            raise GraphError(f"graph_of_thoughts {op.op} {op.id!r} needs inputs: [...]")
        seen.append(op.id)
    if not ops:
        raise GraphError("graph_of_thoughts needs at least one operation")


_Done = tuple[list[Thought], list[Turn]]  # an operation's thoughts and the turns it took


class _OpReport(TypedDict):
    id: str
    op: str
    wave: int
    thoughts: int
    scores: list[float | None]


def graph_of_thoughts(
    agent: Respondent,
    operations: Sequence[Operation],
    *,
    prompts: PromptLibrary | None = None,
    name: str = "graph_of_thoughts",
) -> Graph:
    """Run a graph of operations; each starts when its inputs are done.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"g": ["[2, 1, 3]", "[1, 2, 3]"]})
        >>> ops = [
        ...     Operation(id="sort", op="generate", k=2, prompt="graph_of_thoughts/sort"),
        ...     Operation(id="score", op="score", inputs=["sort"]),
        ...     Operation(id="best", op="keep_best", inputs=["score"]),
        ... ]
        >>> run_sync(graph_of_thoughts(Agent("g", fake.spec()), ops), "[3, 1, 2]").answer
        '[1, 2, 3]'
    """
    ops = list(operations)
    check_operations(ops)
    lib = prompt_library(prompts)

    waves: dict[str, int] = {}
    for op in ops:  # inputs are earlier operations (checked above)
        waves[op.id] = 1 + max((waves[i] for i in op.inputs), default=0)

    async def execute(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = str(state["question"])
        problem = _as_list(digits(question))
        start: list[Thought] = [{"current": problem, "original": problem, "part": 0, "score": None}]
        announced: set[int] = set()
        past = history(state)  # the conversation before the question, in every call

        def operation(op: Operation) -> DagNode[str, _Done]:
            async def run(parents: Mapping[str, _Done]) -> _Done:
                wave = waves[op.id]
                if wave not in announced:  # a wave's first operation to start opens it
                    announced.add(wave)
                    ctx.emit({"type": "round_started", "round": wave, "agents": [agent.name]})
                given = [t for i in op.inputs for t in parents[i][0]] if op.inputs else start
                return await _apply(ctx, agent, lib, op, given, wave, past)

            return DagNode(op.id, run, tuple(op.inputs))

        done = await run_dag([operation(op) for op in ops])
        by_wave = sorted(ops, key=lambda op: waves[op.id])  # stable: declaration order within
        reports: list[_OpReport] = [
            {"id": op.id, "op": op.op, "wave": waves[op.id], "thoughts": len(done[op.id][0]),
             "scores": [t["score"] for t in done[op.id][0]]} for op in by_wave
        ]  # fmt: skip
        final = done[ops[-1].id][0]
        best = min(final, key=lambda t: UNPARSEABLE * 10 if t["score"] is None else t["score"])
        errors = sort_errors(best["current"], problem)
        return {"answer": best["current"], "text": best["current"],
                "transcript": [e for op in by_wave for e in done[op.id][1]],
                "details": {"operations": reports, "waves": max(waves.values()), "errors": errors}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("execute", execute, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "execute")
    graph.add_edge("execute", END)
    return graph


async def _apply(
    ctx: RunContext,
    agent: Respondent,
    lib: PromptLibrary,
    op: Operation,
    given: list[Thought],
    wave: int,
    past: list[dict[str, Any]],
) -> tuple[list[Thought], list[Turn]]:
    """One operation over its input thoughts: the new thoughts and the turns taken."""
    if op.op == "split":
        out: list[Thought] = []
        for t in given:
            seq = digits(t["current"])
            size = -(-len(seq) // op.k)  # ceil: k contiguous parts, the last may be shorter
            for p in range(op.k):
                part = _as_list(seq[p * size : (p + 1) * size])
                out.append({"current": part, "original": part, "part": p + 1, "score": None})
        return out, []
    if op.op == "score":
        scorer = SCORERS[op.scorer]
        return [{**t, "score": scorer(t["current"], t["original"])} for t in given], []
    if op.op == "keep_best":
        if any(t["score"] is None for t in given):
            raise GraphError(f"graph_of_thoughts keep_best {op.id!r} got unscored thoughts; "
                             "put a score operation before it")  # fmt: skip
        order = sorted(range(len(given)), key=lambda i: (given[i]["score"] or 0.0, i))
        return [given[i] for i in order[: op.k]], []
    assert op.prompt is not None  # checked at load time
    template = op.prompt
    if op.op == "aggregate":
        ordered = sorted(given, key=lambda t: t["part"])
        original = _as_list([d for t in ordered for d in digits(t["original"])])
        base: list[tuple[Thought, str]] = [
            ({"current": "", "original": original, "part": 0, "score": None},
             lib.render(template, inputs=[t["current"] for t in ordered]))
        ]  # fmt: skip
    else:
        chosen = [t for t in given if op.part is None or t["part"] == op.part]
        base = [(t, lib.render(template, current=t["current"], original=t["original"]))
                for t in chosen]  # fmt: skip

    async def sample(item: tuple[int, tuple[Thought, str]]) -> tuple[list[Thought], Turn]:
        i, (thought, text) = item
        reply = await ask(ctx, agent, [*past, *user(text)], f"{op.id}/{i}", n=op.k)
        entry = turn(ctx, reply, text=reply.text, answer=None, prompt=text, round=wave,
                     step=op.id, role=op.op)  # fmt: skip
        new: list[Thought] = [{**thought, "current": _parsed(s), "score": None}
                              for s in reply.texts]  # fmt: skip
        return new, entry

    sampled = await ctx.map(sample, enumerate(base))
    return [t for new, _ in sampled for t in new], [entry for _, entry in sampled]


# -- workflow files -------------------------------------------------------------


class GraphOfThoughtsSpec(PatternSpec):
    """A graph of generate / aggregate / score / keep-best operations."""

    kind: Literal["graph_of_thoughts"]
    agent: AgentSlot
    operations: list[Operation] = Field(min_length=1)


@register_pattern(GraphOfThoughtsSpec)
def _build(spec: GraphOfThoughtsSpec, b: Builder) -> Graph:
    for i, op in enumerate(spec.operations):
        if op.prompt is not None:
            b.template(op.prompt, "operations", i, "prompt")
    return graph_of_thoughts(
        b.slot(spec.agent, "agent"), spec.operations, prompts=b.prompts, name=b.name
    )
