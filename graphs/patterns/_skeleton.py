"""Skeleton-of-Thought (Ning et al., 2024; ``METHODS.md`` section 7).

One call writes a numbered outline; every point is then expanded by its own call,
all concurrently; the expansions are joined in outline order. Points are read with
the reference's pattern, keeping the first occurrence of each number. An outline
with no numbered points falls back to answering the question directly (reported
in ``details.fallback``), instead of the reference's empty answer.
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

_POINT = re.compile(r"^\s*(\d+)\.\s?(.+?)\s*$", re.M)


def outline_points(skeleton: str) -> list[tuple[int, str]]:
    """Numbered points of an outline, in order, first occurrence of each number.

    Example:
        >>> outline_points("Intro\\n1. Cost\\n2. Speed\\n1. Again\\n3. Risk")
        [(1, 'Cost'), (2, 'Speed'), (3, 'Risk')]
    """
    seen: dict[int, str] = {}
    for number, text in _POINT.findall(skeleton):
        seen.setdefault(int(number), text)
    return list(seen.items())


def skeleton_of_thought(
    agent: Respondent,
    *,
    expander: Respondent | None = None,
    max_points: int = 10,
    prompts: PromptLibrary | None = None,
    name: str = "skeleton_of_thought",
) -> Graph:
    """Outline, expand every point concurrently, join in order.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"w": ["1. Cost\\n2. Speed"]}, fn=lambda agent, i, msgs: "detail")
        >>> result = run_sync(skeleton_of_thought(Agent("w", fake.spec()), expander=Agent("x", fake.spec())), "Why trains?")
        >>> result.answer
        'detail\\ndetail'
    """
    if max_points < 1:
        raise GraphError(f"skeleton_of_thought needs max_points >= 1, got {max_points}")
    writer = expander or agent
    lib = library(prompts)

    async def write(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = state["question"]
        text = lib.render("skeleton/outline", question=question, max_points=max_points)
        outline = await ask(ctx, agent, user(text), "outline")
        points = outline_points(outline.text)[:max_points]
        entries = [turn(ctx, outline, text=outline.text, answer=None, prompt=text, step="outline")]
        if not points:
            reply = await ask(ctx, agent, state["messages"], "direct")
            entries.append(turn(ctx, reply, text=reply.text, answer=reply.text, prompt=question, step="direct"))
            return {"answer": reply.text, "text": reply.text, "transcript": entries,
                    "details": {"points": [], "fallback": True}}  # fmt: skip
        ctx.emit({"type": "round_started", "round": 1, "agents": [writer.name] * len(points)})

        async def expand(number: int, point: str) -> Any:
            prompt = lib.render("skeleton/expand", question=question, skeleton=outline.text, index=number, point=point)
            return prompt, await ask(ctx, writer, user(prompt), f"point{number}")

        done = await asyncio.gather(*(expand(n, p) for n, p in points))
        for (number, point), (prompt, reply) in zip(points, done):
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="expand", point=number))
        joined = "\n".join(reply.text.strip() for _, reply in done)
        return {"answer": joined, "text": joined, "transcript": entries,
                "details": {"points": [p for _, p in points], "fallback": False}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("write", write, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "write")
    graph.add_edge("write", END)
    return graph


# -- workflow files -------------------------------------------------------------


class SkeletonOfThoughtSpec(PatternSpec):
    """An outline, then every point expanded concurrently, joined in order."""

    kind: Literal["skeleton_of_thought"]
    agent: AgentSlot
    expander: AgentSlot | None = None
    max_points: int = Field(default=10, ge=1, le=50)


@register_pattern(SkeletonOfThoughtSpec)
def _build(spec: SkeletonOfThoughtSpec, b: Builder) -> Graph:
    return skeleton_of_thought(
        b.slot(spec.agent, "agent"), expander=b.optional(spec.expander, "expander"), max_points=spec.max_points,
        prompts=b.prompts, name=b.name,
    )  # fmt: skip
