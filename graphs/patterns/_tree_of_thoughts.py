"""Tree-of-Thoughts, breadth-first (Yao et al., 2023; ``docs/methods.md#tree-of-thoughts``).

For ``depth`` steps: every state on the frontier asks the proposer for next steps
(one call per state, one step per line of its reply); every new state is valued by
``n_evaluate`` sampled judgements, each mapped by its last word (sure 20, likely 1,
impossible 0.001, as in the reference) and summed; a state proposed twice in one
step is valued 0 the second time, and values are cached per prompt; the best
``keep`` states (stable order) form the next frontier. All calls of a step run
concurrently. The answer is the best state's "Answer:" line, else its last line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from pydantic import Field

from concilium._errors import GraphError
from concilium.graphs import END, START, Graph, RunContext
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

VALUE_MAP = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
_ANSWER = re.compile(r"^\s*answer\s*:\s*(.+?)\s*$", re.I | re.M)


def judgement_value(texts: list[str], mapping: Mapping[str, float] = VALUE_MAP) -> float:
    """Sum of the mapped last words of sampled judgements (unknown words count 0).

    Example:
        >>> judgement_value(["looks fine\\nsure", "hmm\\nlikely", "no idea"])
        21.0
    """
    total = 0.0
    for text in texts:
        words = re.findall(r"[a-z]+", text.lower())
        total += mapping.get(words[-1], 0.0) if words else 0.0
    return total


def tree_of_thoughts(
    proposer: Respondent,
    evaluator: Respondent,
    *,
    depth: int = 3,
    breadth: int = 5,
    keep: int = 5,
    n_evaluate: int = 3,
    prompts: PromptLibrary | None = None,
    name: str = "tree_of_thoughts",
) -> Graph:
    """BFS over reasoning steps: propose, value, keep the best ``keep``, ``depth`` times.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> def judge(agent, i, msgs):  # the evaluator: only the state "a" is sure
        ...     return "sure" if "\\na\\n" in msgs[-1]["content"] else "impossible"
        >>> fake = FakeModel({"p": ["a\\nb", "Answer: 42"]}, fn=judge)
        >>> proposer, evaluator = Agent("p", fake.spec()), Agent("v", fake.spec())
        >>> tot = tree_of_thoughts(proposer, evaluator, depth=2, keep=1, n_evaluate=1)
        >>> result = run_sync(tot, "?")
        >>> result.answer, result.details["steps"][0]["kept"]
        ('42', ['a'])
    """
    if depth < 1 or breadth < 1 or keep < 1 or n_evaluate < 1:
        raise GraphError("tree_of_thoughts needs depth, breadth, keep and n_evaluate >= 1")
    lib = prompt_library(prompts)

    async def search(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        bfs = _Search(
            proposer, evaluator, lib, state["question"], history(state), breadth, n_evaluate
        )
        frontier = [""]
        steps: list[_StepReport] = []
        for step in range(1, depth + 1):
            ctx.emit(
                {"type": "round_started", "round": step, "agents": [proposer.name, evaluator.name]}
            )
            proposed = await bfs.expand(ctx, step, frontier)
            if not proposed:
                break
            values = await bfs.value(ctx, step, proposed)
            ranked = sorted(range(len(proposed)), key=lambda i: (-values[i], i))[:keep]  # stable
            frontier = [proposed[i] for i in ranked]
            steps.append({"step": step, "proposed": len(proposed),
                          "values": [round(v, 3) for v in values],
                          "kept": [c.strip().splitlines()[-1] for c in frontier]})  # fmt: skip
        best = frontier[0]
        return {"answer": _answer_line(best), "text": best, "transcript": bfs.entries,
                "details": {"steps": steps, "depth": depth, "keep": keep}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("search", search, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "search")
    graph.add_edge("search", END)
    return graph


class _StepReport(TypedDict):
    """One BFS step in ``details["steps"]``: how many states were proposed, their
    values (in proposal order), and the last line of each state kept."""

    step: int
    proposed: int
    values: list[float]
    kept: list[str]


@dataclass
class _Search:
    """One search: who proposes and values, the values learnt (cached per prompt)
    and the turns taken (in plan order, so a resumed run records the same list)."""

    proposer: Respondent
    evaluator: Respondent
    lib: PromptLibrary
    question: str
    past: list[dict[str, Any]]  # the conversation before the question (kit.history)
    breadth: int
    n_evaluate: int
    cache: dict[str, float] = field(default_factory=dict[str, float])
    entries: list[Turn] = field(default_factory=list[Turn])

    async def expand(self, ctx: RunContext, step: int, frontier: list[str]) -> list[str]:
        """Every frontier state asks the proposer for next steps, all at once; the
        new states (a state plus one line of its reply), in frontier order."""

        async def propose(item: tuple[int, str]) -> tuple[Turn, list[str]]:
            i, so_far = item
            text = self.lib.render(
                "tree_of_thoughts/propose",
                question=self.question,
                steps=so_far,
                breadth=self.breadth,
            )
            reply = await ask(ctx, self.proposer, [*self.past, *user(text)], f"d{step}/p{i}")
            entry = turn(
                ctx, reply, text=reply.text, answer=None, prompt=text, round=step, role="propose"
            )
            lines = [ln.strip() for ln in reply.text.splitlines() if ln.strip()][: self.breadth]
            return entry, [so_far + line + "\n" for line in lines]

        proposals = await ctx.map(propose, enumerate(frontier))
        self.entries.extend(entry for entry, _ in proposals)
        return [state for _, states in proposals for state in states]

    async def value(self, ctx: RunContext, step: int, proposed: list[str]) -> list[float]:
        """Each distinct new state valued by ``n_evaluate`` judgements, all at once;
        a state's repeat within the step is valued 0."""
        first = {c: i for i, c in reversed(list(enumerate(proposed)))}  # each state's first index
        distinct = [(i, c) for i, c in enumerate(proposed) if first[c] == i]

        async def judge(item: tuple[int, str]) -> tuple[Turn | None, float]:
            i, candidate = item
            text = self.lib.render(
                "tree_of_thoughts/value", question=self.question, steps=candidate
            )
            if text in self.cache:  # valued at an earlier step
                return None, self.cache[text]
            reply = await ask(
                ctx, self.evaluator, [*self.past, *user(text)], f"d{step}/v{i}", n=self.n_evaluate
            )
            entry = turn(
                ctx, reply, text=reply.text, answer=None, prompt=text, round=step, role="value"
            )
            self.cache[text] = judgement_value(list(reply.texts))
            return entry, self.cache[text]

        judged = await ctx.map(judge, distinct)
        self.entries.extend(entry for entry, _ in judged if entry is not None)
        by_state = {c: v for (_, c), (_, v) in zip(distinct, judged, strict=True)}
        return [by_state[c] if first[c] == i else 0.0 for i, c in enumerate(proposed)]


def _answer_line(state: str) -> str:
    """The state's last "Answer:" line, else its last line."""
    found = _ANSWER.findall(state)
    return found[-1] if found else (state.strip().splitlines() or [""])[-1]


# -- workflow files -------------------------------------------------------------


class TreeOfThoughtsSpec(PatternSpec):
    """Breadth-first search over reasoning steps: propose, value, keep the best."""

    kind: Literal["tree_of_thoughts"]
    proposer: AgentSlot
    evaluator: AgentSlot
    depth: int = Field(default=3, ge=1, le=20)
    breadth: int = Field(default=5, ge=1, le=50)
    keep: int = Field(default=5, ge=1, le=50)
    n_evaluate: int = Field(default=3, ge=1, le=20)


@register_pattern(TreeOfThoughtsSpec)
def _build(spec: TreeOfThoughtsSpec, b: Builder) -> Graph:
    return tree_of_thoughts(
        b.slot(spec.proposer, "proposer"), b.slot(spec.evaluator, "evaluator"), depth=spec.depth,
        breadth=spec.breadth, keep=spec.keep, n_evaluate=spec.n_evaluate, prompts=b.prompts, name=b.name,
    )  # fmt: skip
