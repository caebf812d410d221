"""Tree-of-Thoughts, breadth-first (Yao et al., 2023; ``METHODS.md`` section 7).

For ``depth`` steps: every state on the frontier asks the proposer for next steps
(one call per state, one step per line of its reply); every new state is valued by
``n_evaluate`` sampled judgements, each mapped by its last word (sure 20, likely 1,
impossible 0.001, as in the reference) and summed; a state proposed twice in one
step is valued 0 the second time, and values are cached per prompt; the best
``keep`` states (stable order) form the next frontier. All calls of a step run
concurrently. The answer is the best state's "Answer:" line, else its last line.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Mapping
from typing import Literal

from pydantic import Field

from concilium._errors import GraphError
from concilium.graphs import AgentSlot, Builder, PatternSpec, register_pattern
from concilium.graphs import END, START, Graph, RunContext
from concilium.prompts import PromptLibrary

from ._common import Respondent, ask, library, turn, user

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
        >>> fake = FakeModel({"p": ["a\\nb", "Answer: 42"]},
        ...                  fn=lambda agent, i, msgs: "sure" if "\\na\\n" in msgs[-1]["content"] else "impossible")
        >>> result = run_sync(tree_of_thoughts(Agent("p", fake.spec()), Agent("v", fake.spec()), depth=2, keep=1, n_evaluate=1), "?")
        >>> result.answer, result.details["steps"][0]["kept"]
        ('42', ['a'])
    """
    if depth < 1 or breadth < 1 or keep < 1 or n_evaluate < 1:
        raise GraphError("tree_of_thoughts needs depth, breadth, keep and n_evaluate >= 1")
    lib = library(prompts)

    async def search(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = state["question"]
        frontier = [""]
        cache: dict[str, float] = {}
        entries: list[dict[str, Any]] = []
        steps: list[dict[str, Any]] = []
        for step in range(1, depth + 1):
            ctx.emit({"type": "round_started", "round": step, "agents": [proposer.name, evaluator.name]})

            async def propose(i: int, steps_so_far: str) -> list[str]:
                text = lib.render("tree_of_thoughts/propose", question=question, steps=steps_so_far, breadth=breadth)
                reply = await ask(ctx, proposer, user(text), f"d{step}/p{i}")
                entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text, round=step, role="propose"))
                lines = [ln.strip() for ln in reply.text.splitlines() if ln.strip()][:breadth]
                return [steps_so_far + line + "\n" for line in lines]

            proposed = [c for group in await asyncio.gather(*(propose(i, y) for i, y in enumerate(frontier))) for c in group]
            if not proposed:
                break

            async def value(i: int, candidate: str) -> float:
                text = lib.render("tree_of_thoughts/value", question=question, steps=candidate)
                if text not in cache:
                    reply = await ask(ctx, evaluator, user(text), f"d{step}/v{i}", n=n_evaluate)
                    entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text, round=step, role="value"))
                    cache[text] = judgement_value(list(reply.texts))
                return cache[text]

            first = {c: i for i, c in reversed(list(enumerate(proposed)))}  # index of each state's first occurrence
            values = await asyncio.gather(*(value(i, c) for i, c in enumerate(proposed) if first[c] == i))
            by_state = dict(zip([c for i, c in enumerate(proposed) if first[c] == i], values))
            scored = [(by_state[c] if first[c] == i else 0.0, i, c) for i, c in enumerate(proposed)]  # duplicates: 0
            ranked = sorted(scored, key=lambda t: (-t[0], t[1]))[:keep]
            frontier = [c for _, _, c in ranked]
            steps.append({"step": step, "proposed": len(proposed),
                          "values": [round(v, 3) for v, _, _ in scored],
                          "kept": [c.strip().splitlines()[-1] for c in frontier]})  # fmt: skip
        best = frontier[0]
        found = _ANSWER.findall(best)
        answer = found[-1] if found else (best.strip().splitlines() or [""])[-1]
        return {"answer": answer, "text": best, "transcript": entries,
                "details": {"steps": steps, "depth": depth, "keep": keep}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("search", search, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "search")
    graph.add_edge("search", END)
    return graph


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
