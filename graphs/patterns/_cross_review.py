"""Cross-review of reasoning paths: Exchange-of-Thought (Yin et al., EMNLP 2023;
``docs/methods.md#cross-review``).

Each path (a persona as the system message) solves the question; if all agree, no
exchange. Otherwise for up to ``rounds`` rounds every path reads the solutions of
the paths its topology names (from round 2 on with their authors' confidence),
re-examines its own and answers again; all paths of a round run concurrently (the
reference builds a round's queries before sending any). Stop when all agree. The
answer is the majority of the latest answers, ties to the first path in order.

Topologies by path index (the reference hard-wires 3 paths A, B, C; here any N):
``memory`` (bus) every path reads all others; ``report`` (star) path 0 reads all,
the others read path 0; ``relay`` (ring) path i reads path i+1; ``debate`` path 0
reads all, the others read each other but not path 0.

Choices: confidence is the share of a path's most frequent answer in its own
history, counted from its first answer (the reference's history-consistency
measure); the answer format is the pattern's (``boxed`` by default) rather than
"the answer is".
"""

from __future__ import annotations

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
    distinct_names,
    register_pattern,
    report_vote,
    turn,
    with_system,
)
from concilium.prompts import PromptLibrary

Topology = Literal["memory", "report", "relay", "debate"]
PERSONAS = [
    "You are Kitty, a high school student admired for your attentiveness and detail-oriented nature.",
    "You are Ben, a high school student with excellent grades in mathematics.",
    "You are Peter, a high school student known for your creative problem solving.",
]


def readers(topology: Topology, n: int) -> list[list[int]]:
    """Whom each path reads, by index.

    Example:
        >>> readers("memory", 3), readers("report", 3), readers("relay", 3), readers("debate", 3)
        ([[1, 2], [0, 2], [0, 1]], [[1, 2], [0], [0]], [[1], [2], [0]], [[1, 2], [2], [1]])
    """
    if topology == "memory":
        return [[j for j in range(n) if j != i] for i in range(n)]
    if topology == "report":
        return [list(range(1, n))] + [[0] for _ in range(1, n)]
    if topology == "relay":
        return [[(i + 1) % n] for i in range(n)]
    return [list(range(1, n))] + [[j for j in range(1, n) if j != i] for i in range(1, n)]


def confidence(history: Sequence[str | None]) -> float:
    """Share of the most frequent answer in a path's own history.

    Example:
        >>> confidence(["7", "8", "7"])
        0.667
    """
    known = [a for a in history if a is not None]
    return round(Counter(known).most_common(1)[0][1] / len(history), 3) if known else 0.0


def cross_review(
    agents: Sequence[Respondent],
    *,
    topology: Topology = "memory",
    rounds: int = 5,
    personas: Sequence[str] | None = None,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    name: str = "cross_review",
) -> Graph:
    """Paths that read and re-examine each other's reasoning, then vote.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"a": ["\\\\boxed{4}"], "b": ["\\\\boxed{4}"]})
        >>> result = run_sync(
        ...     cross_review([Agent("a", fake.spec()), Agent("b", fake.spec())]), "2+2?"
        ... )
        >>> result.answer, result.details["rounds"]
        ('4', 0)
    """
    names = distinct_names(agents, "cross_review")
    if len(names) < 2 or rounds < 0:
        raise GraphError(
            f"cross_review needs >= 2 paths and rounds >= 0, got {len(names)}, {rounds}"
        )
    roles = list(personas) if personas is not None else [PERSONAS[i % 3] for i in range(len(names))]
    if len(roles) != len(names):
        raise GraphError(
            f"cross_review needs one persona per path: {len(names)} paths, {len(roles)} personas"
        )
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib
    sees = readers(topology, len(names))

    async def exchange(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = str(state["question"])
        latest: list[Turn] = []
        history: list[list[str | None]] = [[] for _ in names]
        transcript: list[Turn] = []
        done = 0
        for r in range(rounds + 1):
            ctx.emit({"type": "round_started", "round": r + 1, "agents": names})

            async def answer_one(i: int, r: int = r, prev: list[Turn] = latest) -> Turn:
                if r == 0:
                    text = lib.render("cross_review/solve", question=question,
                                      answer_format=fmt.instruction)  # fmt: skip
                    saw: list[str] = []
                else:
                    peers = [{"name": names[j], "text": " ".join(prev[j]["text"].split()),
                              "confidence": confidence(history[j]) if r > 1 else None}
                             for j in sees[i]]  # fmt: skip
                    text = lib.render("cross_review/review", question=question,
                                      own=prev[i]["text"], peers=peers,
                                      answer_format=fmt.instruction)  # fmt: skip
                    saw = [names[j] for j in sees[i]]
                messages = with_system(conversation(state, text), roles[i])
                reply = await ask(ctx, agents[i], messages, f"r{r}")
                return turn(ctx, reply, text=reply.text, answer=fmt.extract(reply.text),
                            prompt=text, round=r + 1, saw=saw)  # fmt: skip

            latest = await ctx.gather(*(answer_one(i) for i in range(len(names))))
            transcript.extend(latest)
            for i, entry in enumerate(latest):
                history[i].append(entry["answer"])
            done = r
            if len({e["answer"] for e in latest}) == 1:
                break
        _, update = report_vote(ctx, [e for e in latest if e["answer"] is not None] or latest)
        return {**update, "transcript": transcript,
                "details": {"rounds": done, "topology": topology,
                            "confidence": {n: confidence(h) for n, h in zip(names, history, strict=True)}}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node(
        "exchange", exchange, writes=["answer", "text", "votes", "transcript", "details"]
    )
    graph.add_edge(START, "exchange")
    graph.add_edge("exchange", END)
    return graph


# -- workflow files -------------------------------------------------------------


class CrossReviewSpec(PatternSpec):
    """Exchange-of-Thought: paths read each other's solutions by a topology, then vote."""

    kind: Literal["cross_review"]
    agents: list[AgentSlot] = Field(min_length=2)
    topology: Topology = "memory"
    rounds: int = Field(default=5, ge=0, le=20)
    personas: list[str] | None = None
    answer: AnswerSpec = "boxed"


@register_pattern(CrossReviewSpec)
def _build(spec: CrossReviewSpec, b: Builder) -> Graph:
    return cross_review(
        [b.slot(a, "agents", i) for i, a in enumerate(spec.agents)], topology=spec.topology,
        rounds=spec.rounds, personas=spec.personas, answer=b.answer(spec.answer),
        prompts=b.prompts, name=b.name,
    )  # fmt: skip
