"""Confidence-weighted consistency from token logprobs
(``docs/methods.md#confidence-consistency``).

``method="deepconf"`` (offline DeepConf, Fu et al., 2025): N samples in one request
with ``top_logprobs``; each trace gets a confidence (``score``: ``lowest_group``,
``bottom_10``, ``tail`` or ``mean`` over windows of ``window`` tokens); optionally only
the top ``keep_percent`` percent by confidence are kept; then the answers are voted,
each weighted by its trace's confidence.

``method="soft"`` (soft self-consistency, Wang et al., 2024): each sample is scored by
the mean (or ``min``, or ``prod`` = mean logprob) of its chosen tokens'
probabilities, and the single best-scored sample is the answer; no vote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from concilium._errors import GraphError
from concilium.agents import Agent, AgentReply, TokenLogprob
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    DEEPCONF_TOP_K,
    DEEPCONF_WINDOW,
    AnswerFormat,
    AnswerSpec,
    Builder,
    PatternOptions,
    PatternSpec,
    Turn,
    ask,
    majority_vote,
    register_pattern,
    sample_turns,
    solve_messages,
    trace_confidences,
)
from concilium.prompts import PromptLibrary

from ._confidence import keep_top_percent, soft_score, weighted_vote


def confidence_consistency(
    agent: Agent,
    *,
    samples: int = 8,
    method: str = "deepconf",
    score: str = "lowest_group",
    window: int = DEEPCONF_WINDOW,
    keep_percent: float | None = None,
    top_logprobs: int = DEEPCONF_TOP_K,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "confidence_consistency",
) -> Graph:
    """N samples with logprobs, combined by their confidence.

    Args:
        method: ``"deepconf"`` (confidence-weighted vote) or ``"soft"`` (best sample).
        score: DeepConf's trace score, or for ``soft`` one of ``mean``, ``min``, ``prod``.
        keep_percent: DeepConf's filter: keep traces at or above the
            ``100 - keep_percent`` percentile of confidence (10 keeps the top 10%).

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"s": ["\\\\boxed{7}", "maybe \\\\boxed{8}"]})
        >>> agent = Agent("s", fake.spec())  # a FakeModel puts every token at logprob -0.1
        >>> soft = confidence_consistency(agent, samples=2, method="soft", score="mean")
        >>> result = run_sync(soft, "?")
        >>> result.answer, result.details["chosen"], len(result.details["confidences"])
        ('7', 0, 2)
    """
    if not isinstance(agent, Agent):
        raise GraphError(
            "confidence_consistency needs an Agent (it reads token logprobs), not a nested pattern"
        )
    if method not in ("deepconf", "soft"):
        raise GraphError(f"confidence_consistency method {method!r} is not 'deepconf' or 'soft'")
    if samples < 1:
        raise GraphError(f"confidence_consistency needs samples >= 1, got {samples}")
    sampler = agent.with_options(
        logprobs=True, top_logprobs=top_logprobs if method == "deepconf" else None
    )
    opts = PatternOptions(answer, prompts, name)

    async def sample(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        messages = solve_messages(state, opts.lib, prompt, opts.fmt)
        reply = await ask(ctx, sampler, messages, "samples", n=samples)
        entries = sample_turns(ctx, reply, opts.fmt, state["question"])
        confs = _score_samples(entries, reply, method, score, window)
        if method == "soft":
            return _best_sample(entries, confs, score)
        return _deepconf_vote(entries, confs, score, window, keep_percent)

    graph = Graph(opts.name)
    graph.add_node("sample", sample, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "sample")
    graph.add_edge("sample", END)
    return graph


def _score_samples(
    entries: list[Turn], reply: AgentReply, method: str, score: str, window: int
) -> list[float]:
    """Each sample's confidence from its token logprobs, also kept on its turn."""
    confs: list[float] = []
    for i, (entry, logprobs) in enumerate(zip(entries, reply.logprobs_all, strict=False)):
        if not logprobs:
            raise GraphError(f"sample {i} came back without logprobs; confidence_consistency needs a "
                             "server that returns them (capabilities: {logprobs: true})")  # fmt: skip
        entry["confidence"] = _score(entry, logprobs, method, score, window)
        confs.append(entry["confidence"])
    return confs


def _score(
    entry: Turn, logprobs: Sequence[TokenLogprob], method: str, score: str, window: int
) -> float:
    """DeepConf's trace confidence (the one ``sample_turns`` recorded, at the default
    window), or soft self-consistency's sample score; an unknown ``score`` fails
    naming the ones there are."""
    if method == "soft":
        if score in ("mean", "min", "prod"):
            return soft_score(logprobs, score)
        raise ValueError(f"unknown soft score {score!r}; use mean, min or prod")
    if score in ("mean", "lowest_group", "bottom_10", "tail"):
        recorded = entry.get("trace_confidences") if window == DEEPCONF_WINDOW else None
        return (recorded or trace_confidences(logprobs, window))[score]
    raise ValueError(f"unknown trace score {score!r}; use mean, lowest_group, bottom_10 or tail")


def _best_sample(entries: list[Turn], confs: list[float], score: str) -> dict[str, Any]:
    """Soft self-consistency: the best-scored sample is the answer; no vote."""
    best = max(range(len(entries)), key=lambda i: confs[i])  # = its ``sample`` index
    return {"answer": entries[best]["answer"], "text": entries[best]["text"], "transcript": entries,
            "votes": majority_vote([e["answer"] for e in entries]).as_dict(),
            "details": {"method": "soft", "score": score, "chosen": best, "confidences": confs}}  # fmt: skip


def _deepconf_vote(
    entries: list[Turn], confs: list[float], score: str, window: int, keep_percent: float | None
) -> dict[str, Any]:
    """DeepConf: keep the most confident traces (all without ``keep_percent``) and
    vote their answers, each weighted by its trace's confidence."""
    kept = keep_top_percent(confs, keep_percent) if keep_percent else [True] * len(entries)
    for entry, keep in zip(entries, kept, strict=True):
        entry["kept"] = keep
    answers = [e["answer"] for e in entries]
    tally = weighted_vote([a for a, k in zip(answers, kept, strict=True) if k],
                          [c for c, k in zip(confs, kept, strict=True) if k])  # fmt: skip
    carrier = next((e["text"] for e in entries if e["answer"] == tally.winner), None)
    return {"answer": tally.winner, "text": carrier, "transcript": entries, "votes": tally.as_dict(),
            "details": {"method": "deepconf", "score": score, "window": window, "keep_percent": keep_percent,
                        "kept": sum(kept), "confidences": confs,
                        "unweighted": majority_vote(answers).as_dict()}}  # fmt: skip


# -- workflow files -------------------------------------------------------------


class ConfidenceConsistencySpec(PatternSpec):
    """N samples weighted by their token-logprob confidence (DeepConf), or the best one (soft SC)."""

    kind: Literal["confidence_consistency"]
    agent: str = Field(description="an agent name (its logprobs are read)")
    samples: int = Field(default=8, ge=1, le=4096)
    method: Literal["deepconf", "soft"] = "deepconf"
    score: Literal["lowest_group", "bottom_10", "tail", "mean", "min", "prod"] = "lowest_group"
    window: int = Field(default=2048, ge=1)
    keep_percent: float | None = Field(default=None, gt=0, le=100)
    top_logprobs: int = Field(default=20, ge=1, le=20)
    answer: AnswerSpec = "boxed"


@register_pattern(ConfidenceConsistencySpec)
def _build(spec: ConfidenceConsistencySpec, b: Builder) -> Graph:
    allowed = (
        ("mean", "min", "prod")
        if spec.method == "soft"
        else ("lowest_group", "bottom_10", "tail", "mean")
    )
    if spec.score not in allowed:
        raise b.fail(
            f"score {spec.score!r} does not go with method {spec.method!r}: deepconf takes "
            "lowest_group, bottom_10, tail or mean; soft takes mean, min or prod",
            "score",
        )
    agent = b.plain_agent(spec.agent, "agent", why="its token logprobs are read")
    return confidence_consistency(
        agent, samples=spec.samples, method=spec.method, score=spec.score, window=spec.window,
        keep_percent=spec.keep_percent, top_logprobs=spec.top_logprobs, answer=b.answer(spec.answer),
        prompts=b.prompts, name=b.name,
    )  # fmt: skip
