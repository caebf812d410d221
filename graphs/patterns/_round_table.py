"""ReConcile round-table (Chen, Saha and Bansal, 2024; ``docs/methods.md#round-table``).

Agents, ideally on different models, answer with ``{answer, rationale, confidence}``
(structured output). After each round the answers are grouped; every agent is then
shown the two largest groups ("There are 2 agents think the answer is X.", each
member's explanation and confidence; its own answer included, as in the reference)
and answers again, from scratch (rounds are stateless). The team answer is the vote
weighted by the recalibrated confidence ``f(p)``; ties go to the answer given first.
A question on which all agents agree stops early. Optional convincing examples are
given per agent name, and each agent sees the examples of the *other* agents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from pydantic import Field

from concilium import GraphError
from concilium.agents import Agent, AgentReply, AnswerConfidence
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
    distinct_names,
    normalize_number,
    register_pattern,
    turn,
)
from concilium.prompts import PromptLibrary

from ._confidence import WeightedVote, weighted_vote


def recalibrate(p: float) -> float:
    """ReConcile's confidence mapping f(p) (p in [0, 1]).

    Example:
        >>> [recalibrate(p) for p in (1.0, 0.95, 0.85, 0.7, 0.6)]
        [1.0, 0.8, 0.5, 0.3, 0.1]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"confidence {p!r} is not between 0 and 1")
    if p == 1.0:
        return 1.0
    if p >= 0.9:
        return 0.8
    if p >= 0.8:
        return 0.5
    if p > 0.6:
        return 0.3
    return 0.1


class Stance(TypedDict):
    """What one agent said in a round, as the next round shows it to the others."""

    agent: str
    answer: str | None
    explanation: str
    confidence: float


class AnswerGroup(TypedDict):
    """The agents that gave one answer (``count`` of them), shown as one group."""

    answer: str | None
    count: int
    members: list[Stance]


class RoundRecord(TypedDict):
    """One round in ``details.per_round``: each agent's answer and confidence, the tally."""

    round: int
    answers: dict[str, str | None]
    confidences: dict[str, float]
    weights: dict[str, float]


def _canonical(answer: str) -> str:
    return normalize_number(answer) or answer.strip().rstrip(".").lower()


def _read_stance(reply: AgentReply, fmt: AnswerFormat) -> tuple[str, float, str]:
    """(answer, confidence, rationale) from a structured reply; a nested pattern in
    the slot answers in text: its answer, full confidence, no rationale."""
    parsed = reply.parsed
    if isinstance(parsed, AnswerConfidence):
        return parsed.answer, parsed.confidence, parsed.rationale
    return (fmt.extract(reply.text) or reply.text), 1.0, ""


def _round_record(r: int, said: Sequence[Stance], tally: WeightedVote) -> RoundRecord:
    return {"round": r, "answers": {s["agent"]: s["answer"] for s in said},
            "confidences": {s["agent"]: s["confidence"] for s in said},
            "weights": tally.as_dict()["weights"]}  # fmt: skip


def top_groups(answers: Sequence[Stance], limit: int = 2) -> list[AnswerGroup]:
    """The ``limit`` largest answer groups, largest first (ties: first seen), each
    with its members' answers, explanations and confidences."""
    counts = Counter(a["answer"] for a in answers)
    return [
        {"answer": answer, "count": count, "members": [a for a in answers if a["answer"] == answer]}
        for answer, count in counts.most_common(limit)
    ]


def round_table(
    agents: Sequence[Respondent],
    *,
    rounds: int = 3,
    examples: Mapping[str, Sequence[str]] | None = None,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    prompt: str = "round_table/answer",
    name: str = "round_table",
) -> Graph:
    """A ReConcile round-table: up to ``rounds`` rounds (the first answer counts).

    Agents that are ``Agent`` objects without an output schema are given
    ``AnswerConfidence`` (answer, confidence, rationale).

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> replies = {
        ...     "a": ['{"answer": "7", "confidence": 0.7}'],
        ...     "b": ['{"answer": "8", "confidence": 1.0}'],
        ... }
        >>> fake = FakeModel(replies)
        >>> result = run_sync(
        ...     round_table([Agent("a", fake.spec()), Agent("b", fake.spec())], rounds=1), "?"
        ... )
        >>> result.answer, result.votes["weights"]
        ('8', {'7': 0.3, '8': 1.0})
    """
    if len(agents) < 2:
        raise GraphError("round_table needs at least two agents")
    if rounds < 1:
        raise GraphError(f"round_table rounds must be >= 1, got {rounds}")
    names = distinct_names(agents, "round_table")
    members = [a.with_options(output=AnswerConfidence) if isinstance(a, Agent) and a.output is None else a
               for a in agents]  # fmt: skip
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib
    examples = examples or {}
    unknown = sorted(set(examples) - set(names))
    if unknown:
        raise GraphError(
            f"round_table examples name agents that are not in it: {unknown}; agents: {names}"
        )

    def shown_examples(agent: str) -> list[str]:
        return [e for other in names if other != agent for e in examples.get(other, ())]

    async def one(
        ctx: RunContext, agent: Respondent, state: Mapping[str, Any], r: int,
        groups: list[AnswerGroup],
    ) -> tuple[Turn, Stance]:  # fmt: skip
        text = lib.render(prompt, question=state["question"], answer_format=fmt.instruction,
                          examples=shown_examples(agent.name), groups=groups)  # fmt: skip
        reply = await ask(ctx, agent, conversation(state, text), f"r{r}")
        said, confidence, why = _read_stance(reply, fmt)
        entry = turn(ctx, reply, text=reply.text, answer=_canonical(said), prompt=text, round=r,
                     saw=[m["agent"] for g in groups for m in g["members"]])  # fmt: skip
        entry["confidence"] = confidence
        entry["explanation"] = why
        entry["weight"] = recalibrate(confidence)
        stance: Stance = {"agent": entry["agent"], "answer": entry["answer"], "explanation": why,
                          "confidence": confidence}  # fmt: skip
        return entry, stance

    async def one_round(
        ctx: RunContext, state: Mapping[str, Any], r: int, groups: list[AnswerGroup]
    ) -> tuple[list[Turn], list[Stance]]:
        """Every agent answers once, concurrently (a failed call cancels the others)."""
        ctx.emit({"type": "round_started", "round": r, "agents": names})
        spoken = await ctx.map(lambda agent: one(ctx, agent, state, r, groups), members)
        return [entry for entry, _ in spoken], [stance for _, stance in spoken]

    async def discuss(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        transcript: list[Turn] = []
        per_round: list[RoundRecord] = []
        groups: list[AnswerGroup] = []
        tally: WeightedVote | None = None
        for r in range(1, rounds + 1):
            entries, said = await one_round(ctx, state, r, groups)
            transcript.extend(entries)
            tally = weighted_vote(
                [s["answer"] for s in said], [recalibrate(s["confidence"]) for s in said]
            )
            per_round.append(_round_record(r, said, tally))
            groups = top_groups(said)
            if len(groups) == 1:  # consensus: no further rounds
                break
        assert tally is not None
        carrier = next(e["text"] for e in reversed(transcript) if e["answer"] == tally.winner)
        return {"answer": tally.winner, "text": carrier, "transcript": transcript, "votes": tally.as_dict(),
                "details": {"agents": names, "rounds": len(per_round), "max_rounds": rounds,
                            "stopped_early": len(per_round) < rounds, "per_round": per_round}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("discuss", discuss, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "discuss")
    graph.add_edge("discuss", END)
    return graph


# -- workflow files -------------------------------------------------------------


class RoundTableSpec(PatternSpec):
    """ReConcile: agents answer with confidence, see the grouped answers, weighted vote."""

    kind: Literal["round_table"]
    agents: list[AgentSlot] = Field(min_length=2)
    rounds: int = Field(default=3, ge=1, le=20)
    examples: dict[str, list[str]] = Field(
        default_factory=dict, description="convincing examples per agent name"
    )
    answer: AnswerSpec = "text"


@register_pattern(RoundTableSpec)
def _build(spec: RoundTableSpec, b: Builder) -> Graph:
    slots = [b.slot(a, "agents", i) for i, a in enumerate(spec.agents)]
    return round_table(slots, rounds=spec.rounds, examples=spec.examples, answer=b.answer(spec.answer),
                       prompts=b.prompts, name=b.name)  # fmt: skip
