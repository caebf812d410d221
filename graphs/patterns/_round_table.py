"""ReConcile round-table (Chen, Saha and Bansal, 2024; ``METHODS.md`` section 2).

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

import asyncio
from collections import Counter
from typing import Any, Mapping, Sequence

from concilium._errors import GraphError
from concilium.agents import Agent, AnswerConfidence
from concilium.graphs import END, START, AnswerFormat, Graph, RunContext, answer_format, normalize_number, weighted_vote
from concilium.prompts import PromptLibrary

from ._common import Respondent, ask, distinct_names, library, turn, user


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


def _canonical(answer: str) -> str:
    return normalize_number(answer) or answer.strip().rstrip(".").lower()


def top_groups(answers: Sequence[Mapping[str, Any]], limit: int = 2) -> list[dict[str, Any]]:
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
        >>> replies = {"a": ['{"answer": "7", "confidence": 0.7}'], "b": ['{"answer": "8", "confidence": 1.0}']}
        >>> fake = FakeModel(replies)
        >>> result = run_sync(round_table([Agent("a", fake.spec()), Agent("b", fake.spec())], rounds=1), "?")
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
    fmt = answer if isinstance(answer, AnswerFormat) else answer_format(answer)
    lib = library(prompts)
    examples = examples or {}
    unknown = sorted(set(examples) - set(names))
    if unknown:
        raise GraphError(f"round_table examples name agents that are not in it: {unknown}; agents: {names}")

    def shown_examples(agent: str) -> list[str]:
        return [e for other in names if other != agent for e in examples.get(other, ())]

    async def one(ctx: RunContext, agent: Respondent, question: str, r: int, groups: list[dict[str, Any]]) -> dict[str, Any]:
        text = lib.render(prompt, question=question, answer_format=fmt.instruction,
                          examples=shown_examples(agent.name), groups=groups)  # fmt: skip
        reply = await ask(ctx, agent, user(text), f"r{r}")
        parsed = reply.parsed
        if isinstance(parsed, AnswerConfidence):
            said, confidence, why = parsed.answer, parsed.confidence, parsed.rationale
        else:  # a nested pattern in the slot: its answer, full confidence
            said, confidence, why = (fmt.extract(reply.text) or reply.text), 1.0, ""
        entry = turn(ctx, reply, text=reply.text, answer=_canonical(said), prompt=text, round=r,
                     saw=[m["agent"] for g in groups for m in g["members"]])  # fmt: skip
        entry.update(confidence=confidence, explanation=why, weight=recalibrate(confidence))
        return entry

    async def discuss(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        transcript: list[dict[str, Any]] = []
        per_round: list[dict[str, Any]] = []
        groups: list[dict[str, Any]] = []
        tally = None
        for r in range(1, rounds + 1):
            ctx.emit({"type": "round_started", "round": r, "agents": names})
            entries = await asyncio.gather(*(one(ctx, a, state["question"], r, groups) for a in members))
            transcript.extend(entries)
            tally = weighted_vote([e["answer"] for e in entries], [e["weight"] for e in entries])
            per_round.append({"round": r, "answers": {e["agent"]: e["answer"] for e in entries},
                              "confidences": {e["agent"]: e["confidence"] for e in entries},
                              "weights": tally.as_dict()["weights"]})  # fmt: skip
            said = [{"agent": e["agent"], "answer": e["answer"], "explanation": e["explanation"],
                     "confidence": e["confidence"]} for e in entries]  # fmt: skip
            groups = top_groups(said)
            if len(groups) == 1:  # consensus: no further rounds
                break
        assert tally is not None
        carrier = next(e["text"] for e in reversed(transcript) if e["answer"] == tally.winner)
        return {"answer": tally.winner, "text": carrier, "transcript": transcript, "votes": tally.as_dict(),
                "details": {"agents": names, "rounds": len(per_round), "max_rounds": rounds,
                            "stopped_early": len(per_round) < rounds, "per_round": per_round}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("discuss", discuss, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "discuss")
    graph.add_edge("discuss", END)
    return graph
