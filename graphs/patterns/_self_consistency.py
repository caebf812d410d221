"""Self-consistency (Wang et al., 2022): sample N reasoning paths, majority-vote the
extracted answers (``docs/methods.md#self-consistency``).

When the model can return ``n`` samples from one request, the N samples are one
request (vLLM shares the prefill); otherwise N branches run concurrently, each its
own LangGraph task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

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
    ask,
    register_pattern,
    report_vote,
    sample_turns,
    solve_messages,
)
from concilium.prompts import PromptLibrary


def self_consistency(
    agent: Respondent,
    *,
    samples: int = 5,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompt: str = "self_consistency/solve",
    prompts: PromptLibrary | None = None,
    name: str = "self_consistency",
) -> Graph:
    """N samples of one agent, majority vote.

    Args:
        agent: the sampler (an ``Agent``, or a graph via ``as_agent``).
        samples: N.
        answer: how to extract an answer (``"boxed"``, ``"last_number"``,
            ``"option"``, ``{"regex": ...}``, ``{"field": ...}``).
        prompt: template wrapping a bare question (a conversation is passed as is).

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"s": ["\\\\boxed{7}", "\\\\boxed{8}", "\\\\boxed{7}"]})
        >>> run_sync(self_consistency(Agent("s", fake.spec()), samples=3), "?").votes["counts"]
        {'7': 2, '8': 1}
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib
    one_request = isinstance(agent, Agent) and agent.model.capabilities.n

    def branches(state: Mapping[str, Any]) -> list[Branch]:
        messages = solve_messages(state, lib, prompt, fmt)
        if one_request:
            return [Branch("sample", {"messages": messages, "first": 0, "count": samples})]
        return [
            Branch("sample", {"messages": messages, "first": i, "count": 1}) for i in range(samples)
        ]

    async def sample(payload: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        first, count = payload["first"], payload["count"]
        # Separate requests of a seeded agent get seeds seed, seed+1, ... so the
        # samples differ (and stay reproducible).
        seeded = (
            {"seed": agent.seed + first}
            if isinstance(agent, Agent) and agent.seed is not None
            else {}
        )
        reply = await ask(ctx, agent, payload["messages"], f"s{first}", n=count, **seeded)
        prompt_text = payload["messages"][-1]["content"]
        return {"transcript": sample_turns(ctx, reply, fmt, prompt_text, first)}

    async def vote(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        entries = sorted(state.get("transcript") or (), key=lambda e: e["sample"])
        _, update = report_vote(ctx, entries)
        return {
            **update,
            "details": {"samples": len(entries), "requests": 1 if one_request else samples},
        }

    graph = Graph(opts.name)
    graph.add_node("sample", sample, writes=["transcript"], parallel=True)
    graph.add_node("vote", vote, writes=["answer", "text", "votes", "details"])
    graph.add_route(START, branches, ["sample"])
    graph.add_edge("sample", "vote")
    graph.add_edge("vote", END)
    return graph


# -- workflow files -------------------------------------------------------------


class SelfConsistencySpec(PatternSpec):
    """N samples of one agent, majority vote."""

    kind: Literal["self_consistency"]
    agent: AgentSlot
    samples: int = Field(default=5, ge=1, le=4096)
    answer: AnswerSpec = "boxed"
    prompt: str = "self_consistency/solve"


@register_pattern(SelfConsistencySpec)
def _build(spec: SelfConsistencySpec, b: Builder) -> Graph:
    return self_consistency(
        b.slot(spec.agent, "agent"), samples=spec.samples, answer=b.answer(spec.answer),
        prompt=b.template(spec.prompt, "prompt"), prompts=b.prompts, name=b.name,
    )  # fmt: skip
