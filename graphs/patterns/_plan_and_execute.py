"""LLMCompiler-style plan-and-execute (Kim et al., 2024; ``docs/methods.md#plan-and-execute``).

The planner writes a plan of tool calls: the numbered text format, streamed (each
line is parsed the moment it is complete and its task starts as soon as its
dependencies are done, while the planner is still writing), or a JSON task list
under structured output. The executor runs the DAG; the joiner reads the results
and either finishes (``Action: Finish(answer)``) or asks for a new plan
(``Action: Replan(reason)``), which sees the earlier plans, their results and the
reason. A plan that cannot be parsed is sent back to the planner with the parse
error as the reason. ``max_replans`` bounds the rounds; the last round must finish.

A round reads top to bottom: ``_start_round`` (the planner's prompt, the executor),
``_plan_text`` (``_PlanStream`` feeding the ``Executor`` while the planner writes)
or ``_plan_json``, then ``_join``. ReAct, the sequential baseline, is ``_react.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, Union

from pydantic import BaseModel, Field, create_model

from concilium._errors import GraphError, OutputParseError
from concilium.agents import Agent, AgentReply
from concilium.graphs import END, START, Executor, Graph, RunContext, TaskRun
from concilium.graphs.kit import (
    Builder,
    PatternSpec,
    Turn,
    ask,
    history,
    prompt_library,
    register_pattern,
    turn,
    user,
)
from concilium.prompts import PromptLibrary
from concilium.tools import ToolError, ToolRegistry
from concilium.tools.plans import END_OF_PLAN, PlanError, PlanParser, Task, parse_json_plan

_ACTION = re.compile(r"Action\s*:\s*(Finish|Replan)\s*\((.*)\)\s*$", re.S | re.I)


class JsonTask(BaseModel):
    id: int
    tool: str
    args: dict[str, Any] = Field(default_factory=dict, description='argument name -> value; "$N" is task N\'s result')  # fmt: skip


class JsonPlan(BaseModel):
    """A plan as structured output."""

    tasks: list[JsonTask] = Field(min_length=1)


def json_plan_model(tools: ToolRegistry) -> type[BaseModel]:
    """``JsonPlan`` whose tasks are one per tool kind: ``tool`` is the tool's name and
    ``args`` exactly its argument model, so a server with guided decoding can only
    write tasks that name real tools with their real arguments."""
    # The tools' names are known at run time only, so Literal, Union and list are
    # used as the run-time constructors they are, not as static type forms.
    literal: Any = Literal
    union: Any = Union
    list_of: Any = list
    kinds = [
        create_model(f"{name}_task", id=(int, ...), tool=(literal[name], ...), args=(tools.get(name).args, ...))
        for name in tools.names()
    ]  # fmt: skip
    task: Any = kinds[0] if len(kinds) == 1 else union[tuple(kinds)]
    return create_model("JsonPlan", tasks=(list_of[task], Field(min_length=1, max_length=6)))


def parse_decision(text: str) -> tuple[str, str]:
    """The joiner's ``("finish" | "replan", argument)``: the text between ``Finish(`` and
    the last ``)`` (so answers with parentheses survive). A reply without an
    ``Action:`` line finishes with the whole reply.

    Example:
        >>> parse_decision("Thought: done\\nAction: Finish(f(x) = 2)")
        ('finish', 'f(x) = 2')
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip().lower().startswith("action")]
    match = _ACTION.search(lines[-1]) if lines else None
    if match is None:
        return "finish", text.strip()
    return match.group(1).lower(), match.group(2).strip()


def plan_and_execute(
    planner: Agent,
    joiner: Agent,
    tools: ToolRegistry,
    *,
    max_replans: int = 2,
    plan_format: str = "text",
    on_failure: str = "skip_dependents",
    prompts: PromptLibrary | None = None,
    name: str = "plan_and_execute",
) -> Graph:
    """Plan tool calls, run them as a DAG, join; replan if the joiner asks.

    Args:
        plan_format: ``"text"`` (streamed LLMCompiler lines) or ``"json"`` (structured output).
        max_replans: extra planning rounds the joiner may ask for (0: plan once).
        on_failure: the executor's policy, ``"skip_dependents"`` or ``"cancel"``.

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> from concilium.tools import builtin_tools
        >>> plan = '1. calculator("6 * 7")\\n2. calculator("$1 + 1")\\n3. join()'
        >>> fake = FakeModel({"planner": plan, "joiner": "Action: Finish(43)"})
        >>> graph = plan_and_execute(
        ...     Agent("planner", fake.spec()),
        ...     Agent("joiner", fake.spec()),
        ...     builtin_tools(),
        ... )
        >>> result = run_sync(graph, "6 times 7, plus 1?")
        >>> result.answer, [t["result"] for t in result.details["rounds"][0]["tasks"][:2]]
        ('43', ['42', '43'])
    """
    if plan_format not in ("text", "json"):
        raise GraphError(f"plan_format must be 'text' or 'json', got {plan_format!r}")
    if max_replans < 0:
        raise GraphError(f"max_replans must be >= 0, got {max_replans}")
    compiler = _Compiler(
        planner=planner,
        json_planner=planner.with_options(output=json_plan_model(tools)),
        joiner=joiner,
        tools=tools,
        lib=prompt_library(prompts),
        max_replans=max_replans,
        plan_format=plan_format,
        on_failure=on_failure,
    )

    async def solve(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        return await _solve(compiler, state, ctx)

    graph = Graph(name)
    graph.add_node("solve", solve, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "solve")
    graph.add_edge("solve", END)
    return graph


# -- the parts of the method ----------------------------------------------------


@dataclass(frozen=True)
class _Compiler:
    """What every round of one ``plan_and_execute`` graph uses."""

    planner: Agent
    json_planner: Agent  # the planner under structured output (plan_format "json")
    joiner: Agent
    tools: ToolRegistry
    lib: PromptLibrary
    max_replans: int
    plan_format: str
    on_failure: str


class _Unrunnable(TypedDict):
    """A round whose plan could not be run (the planner is asked again)."""

    round: int
    plan_error: str
    tasks: list[dict[str, Any]]


class _Joined(TypedDict):
    """A round whose plan ran and was judged by the joiner."""

    round: int
    plan: str
    decision: str
    reason: str
    tasks: list[dict[str, Any]]
    makespan_s: float


@dataclass
class _Solving:
    """One question across its rounds: what the rounds left so far."""

    question: str
    past: list[dict[str, Any]]  # the conversation before the question (kit.history)
    entries: list[Turn] = field(default_factory=list[Turn])
    rounds: list[_Unrunnable | _Joined] = field(default_factory=list[_Unrunnable | _Joined])
    previous: list[str] = field(default_factory=list[str])  # for the next planner prompt
    memo: dict[str, Any] = field(default_factory=dict[str, Any])  # side effects, across replans
    plan_error: str | None = None


@dataclass(frozen=True)
class _Round:
    """One planning round: ``index`` from 0, the planner's prompt, the executor
    (its calls keyed ``<path>/<tool>/plan/<index>/<task>``) and the clock its task
    times count from."""

    index: int
    prompt: str
    executor: Executor
    origin: float
    past: list[dict[str, Any]]  # the conversation before the question

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The planner's call: the conversation, then this round's prompt."""
        return [*self.past, *user(self.prompt)]

    @property
    def number(self) -> int:
        return self.index + 1


async def _solve(c: _Compiler, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Plan, execute and join, round after round, until the joiner finishes."""
    s = _Solving(state["question"], history(state))
    for r in range(c.max_replans + 1):
        agents = [c.planner.name, c.joiner.name]
        ctx.emit({"type": "round_started", "round": r + 1, "agents": agents})
        rnd = _start_round(c, ctx, s, r)
        plan = _plan_text if c.plan_format == "text" else _plan_json
        try:
            reply, runs = await plan(c, ctx, rnd)
        except (PlanError, ToolError, OutputParseError) as exc:  # the planner tries again
            _unrunnable(s, rnd, exc)
            continue
        s.entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=rnd.prompt,
                              round=rnd.number, step="plan"))  # fmt: skip
        answer = await _join(c, ctx, s, rnd, reply, runs)
        if answer is not None:
            return {"answer": answer, "text": answer, "transcript": s.entries,
                    "details": {"rounds": s.rounds, "replans": len(s.rounds) - 1, "format": c.plan_format}}  # fmt: skip
    raise PlanError(f"no plan could be run in {c.max_replans + 1} round(s): {s.plan_error}")


def _start_round(c: _Compiler, ctx: RunContext, s: _Solving, r: int) -> _Round:
    prompt = c.lib.render("plan_and_execute/plan", question=s.question, tools=_tools_for_prompt(c.tools),
                          end_of_plan=END_OF_PLAN, previous="\n\n".join(s.previous))  # fmt: skip
    executor = Executor(c.tools, on_failure=c.on_failure, key=f"plan/{r}", memo=s.memo)
    return _Round(r, prompt, executor, time.perf_counter(), s.past)


def _unrunnable(s: _Solving, rnd: _Round, exc: Exception) -> None:
    """Record a plan that could not be run; the next planner prompt says why."""
    tasks = [t.as_dict() for t in rnd.executor.runs.values()]
    s.rounds.append({"round": rnd.number, "plan_error": str(exc), "tasks": tasks})
    s.previous.append(f"Plan {rnd.number} could not be run: {exc}")
    s.plan_error = str(exc)


class _PlanStream:
    """The planner's text plan as it streams in: each complete line is parsed into a
    task and queued for the executor; the first line that cannot be read stops the
    reading (the round then fails with that ``PlanError``). Iterating it reads the
    queue, again after a cancelled read too (the executor's cancel policy records
    the rest of the plan that way)."""

    def __init__(self, tools: ToolRegistry) -> None:
        self.parser = PlanParser(tools)
        self.queue: asyncio.Queue[Task | None] = asyncio.Queue()
        self.problems: list[PlanError] = []
        self.reply: AgentReply | None = None

    def on_text(self, delta: str) -> None:
        if self.problems or self.parser.done:
            return
        try:
            self._put(self.parser.feed(delta))
        except PlanError as exc:
            self.problems.append(exc)

    async def write(self, ctx: RunContext, planner: Agent, rnd: _Round) -> None:
        """The planner's streamed call; the queue ends when it does."""
        try:
            self.reply = await ask(ctx, planner, rnd.messages, f"plan{rnd.index}",
                                   on_text=self.on_text, stop=[END_OF_PLAN])  # fmt: skip
            if not self.problems and not self.parser.done:
                self._put(self.parser.close())
        except PlanError as exc:
            self.problems.append(exc)
        finally:
            self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Task]:
        while (task := await self.queue.get()) is not None:
            yield task
        self.queue.put_nowait(None)  # the end, for a second reader too

    def written(self) -> AgentReply:
        """The planner's reply, or the plan's first error."""
        if self.problems:
            raise self.problems[0]
        if self.reply is None:
            raise PlanError("the planner wrote no plan")
        return self.reply

    def _put(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.queue.put_nowait(task)


async def _plan_text(
    c: _Compiler, ctx: RunContext, rnd: _Round
) -> tuple[AgentReply, dict[int, TaskRun]]:
    """The planner writes while the executor runs what it wrote so far. Both run on
    ``ctx.gather``: if the planner's call fails, the tasks still running are
    cancelled; if the executor fails, or the run is cancelled, the planner's
    request is closed rather than left writing."""
    stream = _PlanStream(c.tools)
    await ctx.gather(stream.write(ctx, c.planner, rnd), rnd.executor.run(stream, origin=rnd.origin))
    return stream.written(), rnd.executor.runs


async def _plan_json(
    c: _Compiler, ctx: RunContext, rnd: _Round
) -> tuple[AgentReply, dict[int, TaskRun]]:
    """The planner writes a JSON task list under structured output; then it runs."""
    reply = await ask(ctx, c.json_planner, rnd.messages, f"plan{rnd.index}")
    tasks = parse_json_plan(reply.parsed.model_dump(), c.tools)
    return reply, await rnd.executor.run(tasks, origin=rnd.origin)


async def _join(
    c: _Compiler,
    ctx: RunContext,
    s: _Solving,
    rnd: _Round,
    reply: AgentReply,
    runs: Mapping[int, TaskRun],
) -> str | None:
    """The joiner reads the results: the answer, or None to plan again (the next
    planner prompt gets the plan, its results and the reason). The last round finishes."""
    pad = _scratchpad(runs)
    last = rnd.index == c.max_replans
    prompt = c.lib.render("plan_and_execute/join", question=s.question, scratchpad=pad, can_replan=not last)  # fmt: skip
    verdict = await ask(ctx, c.joiner, [*s.past, *user(prompt)], f"join{rnd.index}")
    decision, argument = parse_decision(verdict.text)
    if last:
        decision = "finish"
    finish = decision == "finish"
    s.entries.append(turn(ctx, verdict, text=verdict.text, answer=argument if finish else None,
                          prompt=prompt, round=rnd.number, step="join"))  # fmt: skip
    s.rounds.append({"round": rnd.number, "plan": reply.text, "decision": decision, "reason": argument,
                     "tasks": [runs[i].as_dict() for i in sorted(runs)],
                     "makespan_s": max((t.ended or 0.0) for t in runs.values())})  # fmt: skip
    if finish:
        return argument
    s.previous.append(f"Plan {rnd.number}:\n{reply.text}\nResults:\n{pad}\nWhy a new plan is needed: {argument}")  # fmt: skip
    return None


def _tools_for_prompt(registry: ToolRegistry) -> list[dict[str, Any]]:
    return [{"name": t.name, "params": list(t.params), "description": t.description}
            for t in (registry.get(n) for n in registry.names())]  # fmt: skip


def _scratchpad(runs: Mapping[int, TaskRun]) -> str:
    """The results as the joiner reads them: ``1. tool({args}) -> result``."""
    lines: list[str] = []
    for index in sorted(runs):
        r = runs[index]
        if r.tool == "join":
            continue
        outcome = str(r.result) if r.status == "ok" else f"{r.status}: {r.error}"
        args = json.dumps(r.args) if r.args is not None else ""
        lines.append(f"{index}. {r.tool}({args}) -> {outcome}")
    return "\n".join(lines) or "(no calls)"


# -- workflow files -------------------------------------------------------------


class PlanAndExecuteSpec(PatternSpec):
    """LLMCompiler: a planner's DAG of tool calls runs in parallel; a joiner answers or replans."""

    kind: Literal["plan_and_execute"]
    planner: str = Field(description="an agent name")
    joiner: str = Field(description="an agent name")
    tools: list[str] = Field(min_length=1, description="tool names (see tools: and the built-ins)")
    max_replans: int = Field(default=2, ge=0, le=10)
    plan_format: Literal["text", "json"] = "text"
    on_failure: Literal["skip_dependents", "cancel"] = "skip_dependents"


@register_pattern(PlanAndExecuteSpec)
def _build_plan_and_execute(spec: PlanAndExecuteSpec, b: Builder) -> Graph:
    return plan_and_execute(
        b.plain_agent(spec.planner, "planner", why="the planner streams its plan"),
        b.plain_agent(spec.joiner, "joiner", why="the joiner reads the results"),
        b.tools(spec.tools, "tools"), max_replans=spec.max_replans, plan_format=spec.plan_format,
        on_failure=spec.on_failure, prompts=b.prompts, name=b.name,
    )  # fmt: skip
