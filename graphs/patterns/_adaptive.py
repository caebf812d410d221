"""Adaptive-Consistency (Aggarwal et al., 2023; ``docs/methods.md#adaptive-consistency``).

Samples are drawn until a stopping rule says the majority is settled. The reference
draws one at a time; here ``parallel`` samples are kept in flight, the rule is checked
each time one arrives, in arrival order, and the samples still in flight when it
says stop are cancelled (their HTTP requests are closed, so the server stops work).

Rules: ``beta`` (default, threshold 0.95): with ``a`` votes for the leading answer
and ``b`` for the runner-up, stop when P(p1 > 1/2) under Beta(a+1, b+1) reaches the
threshold, which equals P(Binomial(a+b+1, 1/2) <= a); ``majority`` (0.8):
leader's share >= threshold with more than one sample; ``entropy`` (0.75):
normalised entropy of the answers <= threshold. Unparseable samples count toward
the budget, as in the reference.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from concilium._errors import GraphError
from concilium.agents import Agent, Message
from concilium.graphs import END, START, Graph, RunContext
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
    register_pattern,
    report_vote,
    solve_messages,
    turn,
)
from concilium.prompts import PromptLibrary

DEFAULT_THRESHOLDS = {"beta": 0.95, "majority": 0.8, "entropy": 0.75}


def beta_confidence(a: int, b: int) -> float:
    """P(p1 > 1/2) under Beta(a+1, b+1) = P(Binomial(a+b+1, 1/2) <= a).

    Example:
        >>> beta_confidence(4, 0), beta_confidence(1, 0)
        (0.96875, 0.75)
    """
    n = a + b + 1
    return sum(math.comb(n, i) for i in range(a + 1)) / 2**n


def should_stop(
    answers: Sequence[str | None], rule: str = "beta", threshold: float | None = None
) -> bool:
    """Whether the answers so far settle the majority under ``rule``.

    Example:
        >>> stream = list("ABAAAAA")
        >>> [should_stop(stream[:k]) for k in (6, 7)]
        [False, True]
    """
    limit = DEFAULT_THRESHOLDS[rule] if threshold is None else threshold
    counts = Counter(a for a in answers if a is not None).most_common()
    if not counts:
        return False
    if rule == "beta":
        a = counts[0][1]
        b = counts[1][1] if len(counts) > 1 else 0
        return beta_confidence(a, b) >= limit
    if rule == "majority":
        return len(answers) > 1 and counts[0][1] / len(answers) >= limit
    if rule == "entropy":
        if len(counts) == 1:
            return len(answers) > 1
        total = sum(c for _, c in counts)
        entropy = -sum(c / total * math.log2(c / total) for _, c in counts)
        return entropy / math.log2(len(counts)) <= limit
    raise GraphError(f"unknown stopping rule {rule!r}; use beta, majority or entropy")


def adaptive_consistency(
    agent: Respondent,
    *,
    max_samples: int = 40,
    parallel: int = 4,
    rule: str = "beta",
    threshold: float | None = None,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "adaptive_consistency",
) -> Graph:
    """Self-consistency that stops sampling once the majority is settled.

    Args:
        max_samples: the budget (the reference uses 40).
        parallel: samples in flight at once (1 reproduces the reference exactly).
        rule, threshold: the stopping rule (``beta`` 0.95, ``majority`` 0.8, ``entropy`` 0.75).

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"s": ["\\\\boxed{7}"]})
        >>> result = run_sync(adaptive_consistency(Agent("s", fake.spec()), parallel=1), "?")
        >>> result.answer, result.details["samples_used"]
        ('7', 4)
    """
    if max_samples < 1 or parallel < 1:
        raise GraphError(
            f"adaptive_consistency needs max_samples >= 1 and parallel >= 1, got {max_samples}, {parallel}"
        )
    if rule not in DEFAULT_THRESHOLDS:
        raise GraphError(f"unknown stopping rule {rule!r}; use beta, majority or entropy")
    opts = PatternOptions(answer, prompts, name)
    base_seed = agent.seed if isinstance(agent, Agent) else None

    def settled(entries: Sequence[Turn]) -> bool:
        return should_stop([e["answer"] for e in entries], rule, threshold)

    async def sample(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        messages = solve_messages(state, opts.lib, prompt, opts.fmt)

        async def draw(i: int) -> Turn:
            return await _one(ctx, agent, messages, i, opts.fmt, base_seed, state["question"])

        # Samples still in flight when the rule says stop are cancelled by map_until.
        entries = await ctx.map_until(draw, range(max_samples), stop=settled, parallel=parallel)
        _, update = report_vote(ctx, entries)
        return {**update, "transcript": entries,
                "details": {"samples_used": len(entries), "max_samples": max_samples, "rule": rule,
                            "threshold": DEFAULT_THRESHOLDS[rule] if threshold is None else threshold,
                            "stopped_by_rule": settled(entries),
                            "arrival_order": [e.get("sample") for e in entries]}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("sample", sample, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "sample")
    graph.add_edge("sample", END)
    return graph


async def _one(
    ctx: RunContext, agent: Respondent, messages: Sequence[Message], i: int,
    fmt: AnswerFormat, base_seed: int | None, question: str,
) -> Turn:  # fmt: skip
    """Sample ``i`` (seeded ``base_seed + i`` when the agent has a seed), as a turn."""
    seeded = {"seed": base_seed + i} if base_seed is not None else {}
    reply = await ask(ctx, agent, messages, f"s{i}", **seeded)
    return turn(
        ctx, reply, text=reply.text, answer=fmt.extract(reply.text), prompt=question, sample=i
    )


# -- workflow files -------------------------------------------------------------


class AdaptiveConsistencySpec(PatternSpec):
    """Samples until a stopping rule says the majority is settled."""

    kind: Literal["adaptive_consistency"]
    agent: AgentSlot
    max_samples: int = Field(default=40, ge=1, le=4096)
    parallel: int = Field(default=4, ge=1, le=256)
    rule: Literal["beta", "majority", "entropy"] = "beta"
    threshold: float | None = Field(default=None, gt=0, le=1)
    answer: AnswerSpec = "boxed"


@register_pattern(AdaptiveConsistencySpec)
def _build(spec: AdaptiveConsistencySpec, b: Builder) -> Graph:
    return adaptive_consistency(
        b.slot(spec.agent, "agent"), max_samples=spec.max_samples, parallel=spec.parallel, rule=spec.rule,
        threshold=spec.threshold, answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
