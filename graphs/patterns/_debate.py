"""Multi-agent debate (Du et al., 2023; ``docs/methods.md#debate``).

N agents answer; for R rounds in all (the first included) each agent then sees
exactly the other agents' answers from the previous round, keeps its own chat
history, and answers again. The answer is the majority of the last round, ties to
the first agent in order. N x R calls; every round's N calls run concurrently.
With one agent the round prompt becomes the reflection ("double-check") prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from concilium import GraphError
from concilium.graphs import END, START, Branch, Graph, RunContext
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
    majority_vote,
    register_pattern,
    report_vote,
    turn,
)
from concilium.prompts import PromptLibrary


def debate(
    agents: Sequence[Respondent],
    *,
    rounds: int = 2,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    initial_prompt: str = "debate/initial",
    round_prompt: str = "debate/round",
    reflect_prompt: str = "debate/reflect",
    name: str = "debate",
) -> Graph:
    """A debate among ``agents`` for ``rounds`` rounds (counting the first answer).

    Agents may use different models, and an agent slot may hold another pattern
    (``as_agent(self_consistency(...))``).

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(fn=lambda agent, i, msgs: "\\\\boxed{84}")
        >>> team = [Agent(f"a{i}", fake.spec()) for i in range(3)]
        >>> result = run_sync(debate(team, rounds=2), "What is 12 * 7?")
        >>> result.answer, result.calls
        ('84', 6)
    """
    if not agents:
        raise GraphError("debate needs at least one agent")
    if rounds < 1:
        raise GraphError(f"debate rounds must be >= 1 (the first answer counts), got {rounds}")
    names = distinct_names(agents, "debate")
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib

    def history(
        state: Mapping[str, Any], i: int, upto: int
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Agent i's messages for round ``upto`` (0-based) and whose answers it sees."""
        question = state["question"]
        first = lib.render(initial_prompt, question=question, answer_format=fmt.instruction)
        messages = conversation(state, first)
        by_round = _turns_by_round(state)
        seen: list[str] = []
        for r in range(upto):
            said = by_round[r]
            messages.append({"role": "assistant", "content": said[names[i]]["text"]})
            others = [n for n in names if n != names[i]]
            if others:
                content = lib.render(
                    round_prompt,
                    question=question,
                    others=[said[n]["text"] for n in others],
                    answer_format=fmt.instruction,
                )
            else:
                content = lib.render(
                    reflect_prompt, question=question, answer_format=fmt.instruction
                )
            messages.append({"role": "user", "content": content})
            seen = others
        return messages, seen

    def speak_all(state: Mapping[str, Any]) -> list[Branch]:
        r = state["round"]
        out: list[Branch] = []
        for i in range(len(agents)):
            messages, seen = history(state, i, r)
            out.append(Branch("speak", {"i": i, "round": r, "messages": messages, "saw": seen}))
        return out

    async def start(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        ctx.emit({"type": "round_started", "round": 1, "agents": names})
        return {"round": 0}

    async def speak(payload: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        agent = agents[int(payload["i"])]
        r = payload["round"]
        reply = await ask(ctx, agent, payload["messages"], f"r{r}")
        entry = turn(
            ctx,
            reply,
            text=reply.text,
            answer=fmt.extract(reply.text),
            prompt=payload["messages"][-1]["content"],
            round=r + 1,
            saw=list(payload["saw"]),
        )
        return {"transcript": [entry]}

    async def next_round(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        r = state["round"] + 1
        if r < rounds:
            ctx.emit({"type": "round_started", "round": r + 1, "agents": names})
        return {"round": r}

    def route(state: Mapping[str, Any]) -> str | list[Branch]:
        return speak_all(state) if state["round"] < rounds else "vote"

    async def vote(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        by_round = _turns_by_round(state)
        per_round = [
            {
                "round": r + 1,
                "answers": {n: by_round[r][n]["answer"] for n in names},
                "counts": majority_vote([by_round[r][n]["answer"] for n in names]).counts,
            }
            for r in range(rounds)
        ]
        # The last round decides; ties go to the first agent in order.
        _, update = report_vote(ctx, [by_round[rounds - 1][n] for n in names])
        return {**update, "details": {"agents": names, "rounds": rounds, "per_round": per_round}}

    graph = Graph(opts.name, state={"round": None})
    graph.add_node("start", start, writes=["round"])
    graph.add_node("speak", speak, writes=["transcript"], parallel=True)
    graph.add_node("next_round", next_round, writes=["round"])
    graph.add_node("vote", vote, writes=["answer", "text", "votes", "details"])
    graph.add_edge(START, "start")
    graph.add_route("start", speak_all, ["speak"])
    graph.add_edge("speak", "next_round")
    graph.add_route("next_round", route, ["speak", "vote"])
    graph.add_edge("vote", END)
    return graph


def _turns_by_round(state: Mapping[str, Any]) -> dict[int, dict[str, Turn]]:
    """Transcript entries of this debate's own speak node, by 0-based round, by agent."""
    out: dict[int, dict[str, Turn]] = {}
    for entry in state.get("transcript") or ():
        if "round" in entry:
            out.setdefault(entry["round"] - 1, {})[entry["agent"]] = entry
    return out


# -- workflow files -------------------------------------------------------------


class DebatePrompts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial: str = "debate/initial"
    round: str = "debate/round"
    reflect: str = "debate/reflect"


class DebateSpec(PatternSpec):
    """Du et al. multi-agent debate: N agents, R rounds counting the first."""

    kind: Literal["debate"]
    agents: list[AgentSlot] = Field(min_length=1)
    rounds: int = Field(default=2, ge=1, le=100)
    answer: AnswerSpec = "boxed"
    prompts: DebatePrompts = Field(default_factory=DebatePrompts)


@register_pattern(DebateSpec)
def _build(spec: DebateSpec, b: Builder) -> Graph:
    slots = [b.slot(a, "agents", i) for i, a in enumerate(spec.agents)]
    names = [s.name for s in slots]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise b.fail(
                f"agent {n!r} appears twice in this debate; each debater needs its own "
                "agent (copy it under agents: with another name)",
                "agents",
                i,
            )
    p = spec.prompts
    return debate(
        slots, rounds=spec.rounds, answer=b.answer(spec.answer), prompts=b.prompts,
        initial_prompt=b.template(p.initial, "prompts", "initial"),
        round_prompt=b.template(p.round, "prompts", "round"),
        reflect_prompt=b.template(p.reflect, "prompts", "reflect"),
        name=b.name,
    )  # fmt: skip
