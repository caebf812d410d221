"""Generative synthesis (A2R-style explore-then-synthesize; ``docs/methods.md#synthesis``).

Explorers (often a small model) draw N attempts, in one request when the server
returns ``n`` samples; a synthesizer (often a bigger model) reads all of them and
writes the answer itself, rather than voting. The explorers' own majority is kept
in ``details`` for comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from concilium import GraphError
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
    majority_vote,
    register_pattern,
    sample_turns,
    solve_messages,
    turn,
)
from concilium.prompts import PromptLibrary


def synthesis(
    explorer: Respondent,
    synthesizer: Respondent,
    *,
    samples: int = 4,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "synthesis",
) -> Graph:
    """N explorations, one synthesis.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(
        ...     {
        ...         "small": ["\\\\boxed{5}", "\\\\boxed{6}", "\\\\boxed{6}"],
        ...         "big": ["so \\\\boxed{6}"],
        ...     }
        ... )
        >>> result = run_sync(
        ...     synthesis(Agent("small", fake.spec()), Agent("big", fake.spec()), samples=3), "?"
        ... )
        >>> result.answer, result.details["explorer_votes"]["counts"]
        ('6', {'5': 1, '6': 2})
    """
    if samples < 1:
        raise GraphError(f"synthesis needs samples >= 1, got {samples}")
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib

    async def explore(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        reply = await ask(
            ctx, explorer, solve_messages(state, lib, prompt, fmt), "explore", n=samples
        )
        return {"transcript": sample_turns(ctx, reply, fmt, state["question"])}

    async def synthesize(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        attempts = sorted(
            (e for e in state["transcript"] if "sample" in e), key=lambda e: e["sample"]
        )
        text = lib.render("synthesis/synthesize", question=state["question"], answer_format=fmt.instruction,
                          attempts=[e["text"] for e in attempts])  # fmt: skip
        reply = await ask(ctx, synthesizer, conversation(state, text), "synthesize")
        value = fmt.extract(reply.text)
        entry = turn(ctx, reply, text=reply.text, answer=value, prompt=text, step="synthesize")
        return {"answer": value, "text": reply.text, "transcript": [entry],
                "details": {"samples": len(attempts),
                            "explorer_votes": majority_vote([e["answer"] for e in attempts]).as_dict()}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("explore", explore, writes=["transcript"])
    graph.add_node("synthesize", synthesize, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "explore")
    graph.add_edge("explore", "synthesize")
    graph.add_edge("synthesize", END)
    return graph


# -- workflow files -------------------------------------------------------------


class SynthesisSpec(PatternSpec):
    """Explorers draw N attempts; a synthesizer reads them all and writes the answer."""

    kind: Literal["synthesis"]
    explorer: AgentSlot
    synthesizer: AgentSlot
    samples: int = Field(default=4, ge=1, le=256)
    answer: AnswerSpec = "boxed"


@register_pattern(SynthesisSpec)
def _build(spec: SynthesisSpec, b: Builder) -> Graph:
    return synthesis(
        b.slot(spec.explorer, "explorer"), b.slot(spec.synthesizer, "synthesizer"), samples=spec.samples,
        answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
