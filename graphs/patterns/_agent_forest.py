"""Agent forest, "More Agents Is All You Need" (Li et al., TMLR 2024;
``docs/methods.md#agent-forest``): N identical agents answer the same prompt, then a vote.

What sets it apart from ``self_consistency``: it is meant to be scaled (the one
option is ``agents``; the paper's accuracy curve against N comes from
``concilium eval DATA examples/agent_forest.yaml --set workflow.agents=1,2,4,8,16``),
and free-text answers are decided by similarity, as the reference does for code:
the sample with the highest cumulative similarity to all the others
(``argmax_i sum_{j != i} sim(s_i, s_j)``, Algorithm 1), with ``sim`` a sentence
BLEU (lower-cased whitespace tokens, 1- to 4-grams, add-one smoothing above
unigrams, brevity penalty; the reference uses sacrebleu's, we use this small
one so nothing is installed). ``vote="auto"`` takes the majority of the extracted
answers and falls back to similarity when the answer format is ``"text"`` or no
sample has an extractable answer. Samples go out as requests of at most
``per_request`` samples each (the reference asks ``n=10`` at a time), all at once;
a model without ``n`` gets one request per agent, all in flight together.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from concilium.agents import Agent
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
    sample_turns,
    solve_messages,
)
from concilium.prompts import PromptLibrary

VoteRule = Literal["auto", "majority", "similarity"]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_similarity(hypothesis: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU of ``hypothesis`` against ``reference`` (lower-cased, whitespace
    tokens, add-one smoothing above unigrams, brevity penalty), in [0, 1].

    Example:
        >>> bleu_similarity("return a + b", "return a + b")
        1.0
        >>> bleu_similarity("return a + b", "print(x)")
        0.0
    """
    hyp, ref = hypothesis.lower().split(), reference.lower().split()
    if not hyp or not ref:
        return 1.0 if hyp == ref else 0.0
    logs = 0.0
    for n in range(1, max_n + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        matched, total = sum((h & r).values()), max(len(hyp) - n + 1, 0)
        if n == 1 and matched == 0:
            return 0.0
        smooth = 0 if n == 1 else 1
        logs += math.log((matched + smooth) / (total + smooth)) if total + smooth else 0.0
    brevity = min(0.0, 1 - len(ref) / len(hyp))
    return round(math.exp(brevity + logs / max_n), 6)


def most_similar(texts: Sequence[str]) -> tuple[int, list[float]]:
    """The index of the text with the highest summed similarity to the others (ties:
    the earliest), and every text's sum.

    Example:
        >>> most_similar(["the cat sat", "a cat sat down", "the cat sat down"])[0]
        2
    """
    scores = [
        round(sum(bleu_similarity(a, b) for j, b in enumerate(texts) if j != i), 6)
        for i, a in enumerate(texts)
    ]
    best = max(range(len(texts)), key=lambda i: (scores[i], -i)) if texts else -1
    return best, scores


def agent_forest(
    agent: Respondent,
    *,
    agents: int = 16,
    vote: VoteRule = "auto",
    per_request: int = 10,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompt: str = "self_consistency/solve",
    prompts: PromptLibrary | None = None,
    name: str = "agent_forest",
) -> Graph:
    """N agents sample the same prompt; majority vote, or the most similar free text.

    Args:
        agent: the agent every member of the forest is (identical, no personas).
        agents: N, the ensemble size to scale.
        vote: ``"majority"`` of extracted answers, ``"similarity"`` (the sample most
            similar to all others), or ``"auto"`` (see the module docstring).
        per_request: samples per request when the model supports ``n``.

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"s": ["\\\\boxed{7}", "\\\\boxed{8}", "\\\\boxed{7}"]})
        >>> run_sync(agent_forest(Agent("s", fake.spec()), agents=3), "?").answer
        '7'
    """
    if agents < 1 or per_request < 1:
        raise ValueError(
            f"agent_forest needs agents >= 1 and per_request >= 1, got {agents}, {per_request}"
        )
    if vote not in ("auto", "majority", "similarity"):
        raise ValueError(f"vote must be 'auto', 'majority' or 'similarity', got {vote!r}")
    opts = PatternOptions(answer, prompts, name)
    batch = per_request if isinstance(agent, Agent) and agent.model.capabilities.n else 1
    firsts = list(range(0, agents, batch))

    async def sample(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        messages = solve_messages(state, opts.lib, prompt, opts.fmt)
        prompt_text = str(messages[-1]["content"])

        async def draw(first: int) -> list[Turn]:
            count = min(batch, agents - first)
            seeded = (
                {"seed": agent.seed + first}
                if isinstance(agent, Agent) and agent.seed is not None
                else {}
            )
            reply = await ask(ctx, agent, messages, f"s{first}", n=count, **seeded)
            return sample_turns(ctx, reply, opts.fmt, prompt_text, first)

        entries = [e for part in await ctx.map(draw, firsts) for e in part]
        free_text = opts.fmt.name == "text" or all(e["answer"] is None for e in entries)
        rule = vote if vote != "auto" else ("similarity" if free_text else "majority")
        details: dict[str, Any] = {"agents": len(entries), "requests": len(firsts), "vote": rule}
        if rule == "majority":
            _, update = report_vote(ctx, entries)
            return {**update, "transcript": entries, "details": details}
        best, scores = most_similar([e["text"] for e in entries])
        ctx.emit({"type": "vote", "counts": {str(i): s for i, s in enumerate(scores)},
                  "winner": str(best)})  # fmt: skip
        winner = entries[best]
        details["similarity"] = scores
        return {"answer": winner["answer"] if winner["answer"] is not None else winner["text"],
                "text": winner["text"], "transcript": entries, "details": details,
                "votes": {"winner": str(best), "similarity": scores}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("forest", sample, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "forest")
    graph.add_edge("forest", END)
    return graph


# -- workflow files -------------------------------------------------------------


class AgentForestSpec(PatternSpec):
    """N identical agents sample the same prompt, then a vote."""

    kind: Literal["agent_forest"]
    agent: AgentSlot
    agents: int = Field(default=16, ge=1, le=4096)
    vote: VoteRule = "auto"
    per_request: int = Field(default=10, ge=1, le=256)
    answer: AnswerSpec = "boxed"
    prompt: str = "self_consistency/solve"


@register_pattern(AgentForestSpec)
def _build(spec: AgentForestSpec, b: Builder) -> Graph:
    return agent_forest(
        b.slot(spec.agent, "agent"), agents=spec.agents, vote=spec.vote,
        per_request=spec.per_request, answer=b.answer(spec.answer),
        prompt=b.template(spec.prompt, "prompt"), prompts=b.prompts, name=b.name,
    )  # fmt: skip
