"""Skeleton-of-Thought (Ning et al., 2024; ``docs/methods.md#skeleton-of-thought``).

One call writes a numbered outline; every point is then expanded by its own call,
all concurrently; the expansions are joined in outline order. Points are read with
the reference's pattern, keeping the first occurrence of each number. An outline
with no numbered points falls back to answering the question directly (reported
in ``details.fallback``), instead of the reference's empty answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from concilium import GraphError
from concilium.agents import AgentReply
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    AgentSlot,
    Builder,
    PatternSpec,
    Respondent,
    ask,
    conversation,
    prompt_library,
    register_pattern,
    turn,
)
from concilium.prompts import PromptLibrary

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
        >>> result = run_sync(
        ...     skeleton_of_thought(Agent("w", fake.spec()), expander=Agent("x", fake.spec())),
        ...     "Why trains?",
        ... )
        >>> result.answer
        'detail\\ndetail'
    """
    if max_points < 1:
        raise GraphError(f"skeleton_of_thought needs max_points >= 1, got {max_points}")
    writer = expander or agent
    lib = prompt_library(prompts)

    async def write(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = state["question"]
        text = lib.render("skeleton/outline", question=question, max_points=max_points)
        outline = await ask(ctx, agent, conversation(state, text), "outline")
        points = outline_points(outline.text)[:max_points]
        entries = [turn(ctx, outline, text=outline.text, answer=None, prompt=text, step="outline")]
        if not points:
            reply = await ask(ctx, agent, conversation(state, question), "direct")
            entries.append(
                turn(ctx, reply, text=reply.text, answer=reply.text, prompt=question, step="direct")
            )
            return {"answer": reply.text, "text": reply.text, "transcript": entries,
                    "details": {"points": [], "fallback": True}}  # fmt: skip
        ctx.emit({"type": "round_started", "round": 1, "agents": [writer.name] * len(points)})
        done = await ctx.map(lambda point: expand(ctx, state, outline.text, point), points)
        # The turns are recorded in outline order once every point is written.
        entries += [
            turn(
                ctx, reply, text=reply.text, answer=None, prompt=prompt, step="expand", point=number
            )
            for (number, _), (prompt, reply) in zip(points, done, strict=True)
        ]
        joined = "\n".join(reply.text.strip() for _, reply in done)
        return {"answer": joined, "text": joined, "transcript": entries,
                "details": {"points": [p for _, p in points], "fallback": False}}  # fmt: skip

    async def expand(
        ctx: RunContext, state: Mapping[str, Any], skeleton: str, point: tuple[int, str]
    ) -> tuple[str, AgentReply]:
        """One point written out (its prompt and the reply); all points are asked at
        once, and one failing cancels the others."""
        number, text = point
        prompt = lib.render(
            "skeleton/expand", question=state["question"], skeleton=skeleton, index=number,
            point=text,
        )  # fmt: skip
        return prompt, await ask(ctx, writer, conversation(state, prompt), f"point{number}")

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
