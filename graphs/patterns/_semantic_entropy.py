"""Semantic-entropy stopping (SEAT-style; ``docs/methods.md#semantic-entropy``).

Samples are drawn ``per_round`` at a time. After each round the answers so far are
clustered by meaning and sampling stops at the first round whose semantic entropy
``-sum p_c ln p_c`` (``p_c`` = share of cluster ``c``) falls below ``threshold``.
Without a ``judge``, answers cluster by their normalised extracted answer (short
answers); with one, by meaning (free text): two replies share a cluster when the
judge says each entails the other (strict, as in jlko/semantic_uncertainty), each new answer
compared with each cluster's first member. An unparsable answer is a cluster of its
own. This is its own kind, not an adaptive-consistency rule: the judge's calls are
asynchronous model calls, which a ``map_until`` stop predicate cannot make.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from concilium._errors import GraphError
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
    conversation,
    register_pattern,
    solve_messages,
    turn,
)
from concilium.prompts import PromptLibrary


def cluster_entropy(ids: Sequence[int]) -> float:
    """Entropy (natural log) of the cluster distribution of ``ids``.

    Example:
        >>> round(cluster_entropy([0, 0, 1, 1]), 4), cluster_entropy([3, 3])
        (0.6931, 0.0)
    """
    n = len(ids)
    return 0.0 - sum(c / n * math.log(c / n) for c in Counter(ids).values()) if n else math.inf


def _entails(reply_text: str) -> bool:
    head = reply_text.strip().lower()
    return head.startswith("entail") or head.startswith("yes")


def semantic_entropy(
    agent: Respondent,
    judge: Respondent | None = None,
    *,
    max_samples: int = 16,
    per_round: int = 4,
    threshold: float = 0.5,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "semantic_entropy",
) -> Graph:
    """Sample in rounds until the semantic entropy of the answers drops below ``threshold``.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(
        ...     {"s": ["\\\\boxed{7}", "\\\\boxed{8}", "\\\\boxed{7}", "\\\\boxed{7}"]}
        ... )
        >>> result = run_sync(semantic_entropy(Agent("s", fake.spec()), per_round=2), "?")
        >>> result.answer, result.details["entropies"]
        ('7', [0.6931, 0.5623, 0.4506])
    """
    if max_samples < 1 or per_round < 1 or threshold <= 0:
        raise GraphError(
            f"semantic_entropy needs max_samples >= 1, per_round >= 1 and threshold > 0, "
            f"got {max_samples}, {per_round}, {threshold}"
        )
    opts = PatternOptions(answer, prompts, name)
    free_text = judge is not None  # with a judge, whole replies are compared by meaning

    async def sample(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        messages = solve_messages(state, opts.lib, prompt, opts.fmt)
        question = state["question"]
        entries: list[Turn] = []
        ids: list[int] = []
        heads: list[tuple[int, Turn]] = []  # each cluster's first member, with its index
        entropies: list[float] = []
        judged: list[tuple[int, int]] = []

        async def draw(i: int) -> Turn:
            reply = await ask(ctx, agent, messages, f"s{i}")
            return turn(ctx, reply, text=reply.text, answer=opts.fmt.extract(reply.text),
                        prompt=question, sample=i)  # fmt: skip

        async def entails(i: int, a: str, j: int, b: str) -> bool:
            assert judge is not None
            text = opts.lib.render("semantic_entropy/entails", question=question, first=a, second=b)
            reply = await ask(ctx, judge, conversation(state, text), f"e{i}-{j}", temperature=0.0)
            return _entails(reply.text)

        async def place(i: int, entry: Turn) -> int:
            """The cluster of sample ``i``: the first whose head it matches, else a new one."""
            for c, (h, head) in enumerate(heads):
                if not free_text:
                    answer = entry["answer"]
                    same = answer is not None and _norm(answer) == _norm(head["answer"])
                else:
                    judged.append((h, i))
                    both = await ctx.gather(entails(i, entry["text"], h, head["text"]),
                                            entails(h, head["text"], i, entry["text"]))  # fmt: skip
                    same = all(both)
                if same:
                    return c
            heads.append((i, entry))
            return len(heads) - 1

        while len(entries) < max_samples:
            start = len(entries)
            batch = await ctx.map(draw, range(start, min(start + per_round, max_samples)))
            for i, entry in enumerate(batch, start):
                ids.append(await place(i, entry))
                entries.append(entry)
            entropies.append(round(cluster_entropy(ids), 4))
            if entropies[-1] < threshold:
                break
        sizes = Counter(ids)
        best = max(sizes, key=lambda c: (sizes[c], -c))  # tie: the earliest cluster
        head = heads[best][1]
        winner = head["answer"] if head["answer"] is not None else head["text"]
        return {"answer": winner, "text": head["text"], "transcript": entries,
                "votes": {"counts": {str(c): n for c, n in sorted(sizes.items())}, "winner": str(best)},
                "details": {"samples_used": len(entries), "max_samples": max_samples,
                            "threshold": threshold, "entropies": entropies, "clusters": ids,
                            "stopped_by_rule": entropies[-1] < threshold,
                            "judged_pairs": judged}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("sample", sample, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "sample")
    graph.add_edge("sample", END)
    return graph


def _norm(answer: str | None) -> str:
    return " ".join((answer or "").lower().split()).rstrip(".")


# -- workflow files -------------------------------------------------------------


class SemanticEntropySpec(PatternSpec):
    """Samples in rounds until the semantic entropy of the answers is below a threshold."""

    kind: Literal["semantic_entropy"]
    agent: AgentSlot
    judge: AgentSlot | None = None
    max_samples: int = Field(default=16, ge=1, le=4096)
    per_round: int = Field(default=4, ge=1, le=256)
    threshold: float = Field(default=0.5, gt=0)
    answer: AnswerSpec = "boxed"


@register_pattern(SemanticEntropySpec)
def _build(spec: SemanticEntropySpec, b: Builder) -> Graph:
    judge = b.slot(spec.judge, "judge") if spec.judge is not None else None
    return semantic_entropy(
        b.slot(spec.agent, "agent"), judge, max_samples=spec.max_samples, per_round=spec.per_round,
        threshold=spec.threshold, answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
