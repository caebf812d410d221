"""Division-of-Thoughts: small/large routing over a decomposition (Shao et al., WWW
2025; ``docs/methods.md#division-of-thoughts``).

A planner (the large model unless given) breaks the problem into numbered
sub-tasks as structured output (``DotPlan``): each names the earlier sub-tasks it
depends on and rates its own difficulty from 1 to 5. Each sub-task runs on the
``small`` or the ``large`` agent, as soon as the sub-tasks it depends on have ended
(so independent ones are in flight together), and sees their answers; the planner
composes the final answer from all sub-task answers. ``details`` reports every
sub-task (level, model, confidence, answer) and, per model, the sub-tasks, calls
and tokens it spent.

Difficulty, two choices (``route``):

- ``"rated"`` (default): the planner's 1-5 rating, the reference's LLM-rated
  variant (``AllocateModel``) cut to two models; a rating of at least ``hard_from``
  (default 4: our choice, the reference picks from a six-model ladder and states
  no threshold) goes to ``large``.
- ``"confidence"``: the reference's label search as a deployable cascade: the small
  model answers with logprobs; its confidence is the ``alpha``-quantile (0.4) of
  its token probabilities, and below ``threshold`` (0.9; both the reference's
  values) the sub-task is asked again of ``large``, whose answer is kept.

The reference's trained adapter needs the small model's hidden states, which an
OpenAI-compatible server does not return, so it is not offered. Where this differs
from the reference, by choice: one structured planner call instead of three
free-text calls (steps, relations, edges); a dependency on a later or unknown
sub-task is dropped (listed in ``details["dropped_edges"]``) instead of retrying
the question, so the graph is acyclic by construction; sub-tasks start as soon as
their parents end rather than level by level with no concurrency, and each sees
only its direct parents' answers (the reference shows all answers so far); every
level runs, the deepest included (the reference's ``range(MAXHeight)`` skips it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field

from concilium._errors import GraphError
from concilium.agents import Agent
from concilium.graphs import END, START, DagNode, Graph, RunContext, run_dag
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
    turn,
)
from concilium.prompts import PromptLibrary

Model = Literal["small", "large"]


class DotStep(BaseModel):
    """One planned sub-task (numbered from 1 in plan order)."""

    id: int = Field(description="the sub-task's number, from 1")
    task: str = Field(description="the sub-problem, self-contained")
    depends_on: list[int] = Field(
        default_factory=list[int], description="numbers of earlier sub-tasks whose results it needs"
    )
    difficulty: int = Field(default=3, ge=1, le=5, description="1 easy (small model) .. 5 hard")


class DotPlan(BaseModel):
    """The planner's decomposition (its structured output)."""

    subtasks: list[DotStep] = Field(min_length=1)


class _Node(TypedDict):
    id: int
    task: str
    depends_on: list[int]
    difficulty: int
    level: int


class _Solved(_Node):
    model: Model
    agent: str
    confidence: float | None
    answer: str


class _Spent(TypedDict):
    agent: str
    subtasks: int
    calls: int
    prompt_tokens: int
    completion_tokens: int


def quantile_confidence(logprobs: Sequence[float], alpha: float = 0.4) -> float:
    """The ``alpha``-quantile of the token probabilities (linear interpolation), the
    reference's confidence of a small-model answer; 0.0 for no tokens.

    Example:
        >>> round(quantile_confidence([math.log(p) for p in (0.5, 1.0, 0.9, 0.7, 0.99)]), 3)
        0.82
    """
    probs = sorted(math.exp(lp) for lp in logprobs)
    if not probs:
        return 0.0
    pos = alpha * (len(probs) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(probs) - 1)
    return probs[low] + (probs[high] - probs[low]) * (pos - low)


def dependency_graph(plan: DotPlan, max_subtasks: int) -> tuple[list[_Node], list[list[int]]]:
    """The first ``max_subtasks`` sub-tasks renumbered 1..n in plan order, each
    depending only on earlier ones, with its level (0: no dependencies); and the
    dropped edges ``[from, to]`` (in the plan's numbers).

    Example:
        >>> plan = DotPlan.model_validate(
        ...     {
        ...         "subtasks": [
        ...             {"id": 1, "task": "a", "depends_on": [2]},
        ...             {"id": 2, "task": "b", "depends_on": [1]},
        ...         ]
        ...     }
        ... )
        >>> nodes, dropped = dependency_graph(plan, 5)
        >>> [(n["id"], n["depends_on"], n["level"]) for n in nodes], dropped
        ([(1, [], 0), (2, [1], 1)], [[2, 1]])
    """
    steps = plan.subtasks[:max_subtasks]
    number = {}  # the plan's id -> position (first wins)
    for i, step in enumerate(steps, 1):
        number.setdefault(step.id, i)
    nodes: list[_Node] = []
    dropped: list[list[int]] = []
    for i, step in enumerate(steps, 1):
        parents: list[int] = []
        for dep in step.depends_on:
            p = number.get(dep)
            if p is None or p >= i:
                dropped.append([dep, step.id])
            elif p not in parents:
                parents.append(p)
        level = 1 + max((nodes[p - 1]["level"] for p in parents), default=-1)
        nodes.append({"id": i, "task": step.task, "depends_on": sorted(parents),
                      "difficulty": step.difficulty, "level": level})  # fmt: skip
    return nodes, dropped


@dataclass(frozen=True)
class _Router:
    """Runs one sub-task on the model its difficulty calls for."""

    small: Respondent
    large: Respondent
    lib: PromptLibrary
    route: Literal["rated", "confidence"]
    hard_from: int
    threshold: float
    alpha: float

    def __post_init__(self) -> None:
        if not 1 <= self.hard_from <= 6:
            raise GraphError("division_of_thoughts hard_from is a difficulty 1..5 (6: never large), "
                             f"got {self.hard_from}")  # fmt: skip
        if not (0.0 <= self.threshold <= 1.0 and 0.0 <= self.alpha <= 1.0):
            raise GraphError("division_of_thoughts threshold and alpha are in [0, 1], "
                             f"got {self.threshold} and {self.alpha}")  # fmt: skip
        if self.route not in ("rated", "confidence"):
            raise GraphError(
                f"division_of_thoughts route is 'rated' or 'confidence', got {self.route!r}"
            )
        if self.small.name == self.large.name:
            raise GraphError("division_of_thoughts small and large need distinct names, both are "
                             f"{self.small.name!r} (copy the agent with another name)")  # fmt: skip

    @property
    def agents(self) -> dict[Model, Respondent]:
        return {"small": self.small, "large": self.large}

    async def solve(
        self, ctx: RunContext, node: _Node, state: Mapping[str, Any], parents: Sequence[_Solved]
    ) -> tuple[_Solved, list[Turn]]:
        """Ask the routed model (with ``confidence``: small first, then large if
        small is unsure); the sub-task sees its parents' answers."""
        text = self.lib.render("division_of_thoughts/solve", question=state["question"],
                               task=node["task"], parents=parents)  # fmt: skip
        asked = conversation(state, text)
        tag = f"subtask{node['id']}"
        saw = [f"subtask {p}" for p in node["depends_on"]]
        model: Model = "small"
        confidence: float | None = None
        entries: list[Turn] = []
        if self.route == "rated" and node["difficulty"] >= self.hard_from:
            model = "large"
        if self.route == "confidence":
            reply = await ask(ctx, self.small, asked, tag, logprobs=True)
            if reply.logprobs is None:
                raise GraphError(f"division_of_thoughts route 'confidence' needs token logprobs; {self.small.name!r} "
                                 "returned none (use a server that returns logprobs, or route: rated)")  # fmt: skip
            confidence = quantile_confidence([t.logprob for t in reply.logprobs], self.alpha)
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text, step="subtask",
                                index=node["id"], task=node["task"], round=node["level"] + 1, saw=saw,
                                role="small", confidence=confidence))  # fmt: skip
            if confidence < self.threshold:
                model = "large"
        if self.route == "rated" or model == "large":
            reply = await ask(ctx, self.agents[model], asked, f"{tag}/{model}")
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text, step="subtask",
                                index=node["id"], task=node["task"], round=node["level"] + 1, saw=saw,
                                role=model))  # fmt: skip
        solved: _Solved = {**node, "model": model, "agent": self.agents[model].name,
                           "confidence": confidence, "answer": entries[-1]["text"]}  # fmt: skip
        return solved, entries


def division_of_thoughts(
    small: Respondent,
    large: Respondent,
    *,
    planner: Agent | None = None,
    route: Literal["rated", "confidence"] = "rated",
    hard_from: int = 4,
    threshold: float = 0.9,
    alpha: float = 0.4,
    max_subtasks: int = 6,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    name: str = "division_of_thoughts",
) -> Graph:
    """Decompose, route each sub-task to the small or the large agent, compose.

    Args:
        small: the cheap agent, for easy sub-tasks.
        large: the strong agent, for hard ones (and the planner, when none is given).
        planner: plans and composes (structured output); default ``large``.
        route: ``"rated"`` (the planner's difficulty) or ``"confidence"`` (small first,
            escalated when its token confidence is below ``threshold``).
        hard_from: with ``"rated"``, the lowest difficulty that goes to ``large``.
        threshold: with ``"confidence"``, the confidence a small answer needs to stand.
        alpha: with ``"confidence"``, the quantile of the token probabilities.
        max_subtasks: sub-tasks kept from the plan.

    Example:
        >>> import json
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> plan = {
        ...     "subtasks": [
        ...         {"id": 1, "task": "6*7", "difficulty": 1},
        ...         {"id": 2, "task": "add 8", "depends_on": [1], "difficulty": 5},
        ...     ]
        ... }
        >>> fake = FakeModel({"big": [json.dumps(plan), "50", "so 50"], "tiny": ["42"]})
        >>> result = run_sync(
        ...     division_of_thoughts(Agent("tiny", fake.spec()), Agent("big", fake.spec())), "?"
        ... )
        >>> result.answer, [s["model"] for s in result.details["subtasks"]]
        ('so 50', ['small', 'large'])
    """
    if max_subtasks < 1:
        raise GraphError(f"division_of_thoughts needs max_subtasks >= 1, got {max_subtasks}")
    if planner is None:
        if not isinstance(large, Agent):
            raise GraphError("division_of_thoughts plans with structured output: give planner= an Agent "
                             f"when large is a nested pattern ({large.name!r})")  # fmt: skip
        planner = large
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib
    router = _Router(small, large, lib, route, hard_from, threshold, alpha)
    structured = planner.with_options(output=DotPlan)

    async def plan(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        text = lib.render(
            "division_of_thoughts/plan", question=state["question"], max_subtasks=max_subtasks
        )
        reply = await ask(ctx, structured, conversation(state, text), "plan")
        nodes, dropped = dependency_graph(reply.parsed, max_subtasks)
        entry = turn(ctx, reply, text=reply.text, answer=None, prompt=text, step="plan")
        return {"transcript": [entry], "details": {"plan": nodes, "dropped_edges": dropped}}

    async def solve(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        nodes: list[_Node] = state["details"]["plan"]

        def subtask(node: _Node) -> DagNode[int, tuple[_Solved, list[Turn]]]:
            async def run(
                parents: Mapping[int, tuple[_Solved, list[Turn]]],
            ) -> tuple[_Solved, list[Turn]]:
                return await router.solve(ctx, node, state, [s for s, _ in parents.values()])

            return DagNode(node["id"], run, tuple(node["depends_on"]))

        results = (await run_dag([subtask(n) for n in nodes])).values()
        return {"transcript": [e for _, entries in results for e in entries],
                "details": {"subtasks": [s for s, _ in results]}}  # fmt: skip

    async def compose(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        solved: list[_Solved] = state["details"]["subtasks"]
        text = lib.render("division_of_thoughts/compose", question=state["question"], subtasks=solved,
                          answer_format=fmt.instruction)  # fmt: skip
        reply = await ask(ctx, planner, conversation(state, text), "compose")
        value = fmt.extract(reply.text)
        entry = turn(ctx, reply, text=reply.text, answer=value, prompt=text, step="compose")
        spent = _spending([*state["transcript"], entry], solved, router.agents)
        return {
            "answer": value,
            "text": reply.text,
            "transcript": [entry],
            "details": {"models": spent},
        }

    graph = Graph(opts.name)
    graph.add_node("plan", plan, writes=["transcript", "details"])
    graph.add_node("solve", solve, writes=["transcript", "details"])
    graph.add_node("compose", compose, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "solve")
    graph.add_edge("solve", "compose")
    graph.add_edge("compose", END)
    return graph


def _spending(
    entries: Sequence[Turn], solved: Sequence[_Solved], agents: Mapping[Model, Respondent]
) -> dict[str, _Spent]:
    """Per model: the sub-tasks it answered, and the calls and tokens of every turn
    its agent took (planning and composing included; a planner of its own is
    reported under ``planner``)."""
    spent: dict[str, _Spent] = {}
    role_of = {a.name: m for m, a in agents.items()}
    for m, a in agents.items():
        spent[m] = {"agent": a.name, "subtasks": sum(s["model"] == m for s in solved), "calls": 0,
                    "prompt_tokens": 0, "completion_tokens": 0}  # fmt: skip
    for e in entries:
        role = role_of.get(e["agent"], "planner")
        row = spent.setdefault(role, {"agent": e["agent"], "subtasks": 0, "calls": 0,
                                      "prompt_tokens": 0, "completion_tokens": 0})  # fmt: skip
        row["calls"] += 1
        row["prompt_tokens"] += e["prompt_tokens"]
        row["completion_tokens"] += e["completion_tokens"]
    return spent


# -- workflow files -------------------------------------------------------------


class DivisionOfThoughtsSpec(PatternSpec):
    """Decompose into dependent sub-tasks, route each to a small or a large agent, compose."""

    kind: Literal["division_of_thoughts"]
    small: AgentSlot
    large: AgentSlot
    planner: str | None = None
    route: Literal["rated", "confidence"] = "rated"
    hard_from: int = Field(default=4, ge=1, le=6)
    threshold: float = Field(default=0.9, ge=0, le=1)
    alpha: float = Field(default=0.4, ge=0, le=1)
    max_subtasks: int = Field(default=6, ge=1, le=32)
    answer: AnswerSpec = "text"


@register_pattern(DivisionOfThoughtsSpec)
def _build(spec: DivisionOfThoughtsSpec, b: Builder) -> Graph:
    why = "the planner writes the plan with structured output"
    planner = None if spec.planner is None else b.plain_agent(spec.planner, "planner", why=why)
    large = (
        b.slot(spec.large, "large")
        if planner is not None
        else b.plain_agent(spec.large, "large", why=why)
    )
    return division_of_thoughts(
        b.slot(spec.small, "small"), large, planner=planner, route=spec.route, hard_from=spec.hard_from,
        threshold=spec.threshold, alpha=spec.alpha, max_subtasks=spec.max_subtasks,
        answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
