"""LLMCompiler-style plan-and-execute (Kim et al., 2024; ``METHODS.md`` section 4), and
ReAct, one tool call per turn, as the baseline to compare it with.

``plan_and_execute``: the planner writes a plan of tool calls (the numbered text
format, streamed: each line is parsed the moment it is complete and its task starts
as soon as its dependencies are done, while the planner is still writing; or a JSON
task list under structured output). The executor runs the DAG; the joiner reads the
results and either finishes (``Action: Finish(answer)``) or asks for a new plan
(``Action: Replan(reason)``), which sees the earlier plans, their results and the
reason. A plan that cannot be parsed is sent back to the planner with the parse
error as the reason. ``max_replans`` bounds the rounds; the last round must finish.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, AsyncIterator, Literal, Mapping, Union

from pydantic import BaseModel, Field, create_model

from concilium._errors import GraphError, OutputParseError, RunError
from concilium.agents import Agent
from concilium.graphs import Builder, PatternSpec, register_pattern
from concilium.graphs import END, START, Executor, Graph, RunContext, TaskRun
from concilium.prompts import PromptLibrary
from concilium.tools import END_OF_PLAN, PlanError, PlanParser, Task, ToolError, ToolRegistry, parse_arguments, parse_json_plan

from ._common import ask, library, turn, user

_ACTION = re.compile(r"Action\s*:\s*(Finish|Replan)\s*\((.*)\)\s*$", re.S | re.I)
_REACT_ACTION = re.compile(r"Action\s*:\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)
_REACT_ANSWER = re.compile(r"^\s*Answer\s*:\s*(.+)", re.M | re.S)


class JsonTask(BaseModel):
    id: int
    tool: str
    args: dict[str, Any] = Field(default_factory=dict, description='argument name -> value; "$N" is task N\'s result')


class JsonPlan(BaseModel):
    """A plan as structured output."""

    tasks: list[JsonTask] = Field(min_length=1)


def json_plan_model(tools: ToolRegistry) -> type[BaseModel]:
    """``JsonPlan`` whose tasks are one per tool kind: ``tool`` is the tool's name and
    ``args`` exactly its argument model, so a server with guided decoding can only
    write tasks that name real tools with their real arguments."""
    kinds = []
    for name in tools.names():
        tool = tools.get(name)
        kinds.append(create_model(f"{name}_task", id=(int, ...), tool=(Literal[name], ...), args=(tool.args, ...)))  # type: ignore[valid-type]
    task = kinds[0] if len(kinds) == 1 else Union[tuple(kinds)]  # type: ignore[valid-type]
    return create_model("JsonPlan", tasks=(list[task], Field(min_length=1, max_length=6)))  # type: ignore[valid-type]


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


def _tools_for_prompt(registry: ToolRegistry) -> list[dict[str, Any]]:
    return [{"name": t.name, "params": list(t.params), "description": t.description}
            for t in (registry.get(n) for n in registry.names())]  # fmt: skip


def _scratchpad(runs: Mapping[int, TaskRun]) -> str:
    lines = []
    for index in sorted(runs):
        r = runs[index]
        if r.tool == "join":
            continue
        outcome = str(r.result) if r.status == "ok" else f"{r.status}: {r.error}"
        lines.append(f"{index}. {r.tool}({json.dumps(r.args) if r.args is not None else ''}) -> {outcome}")
    return "\n".join(lines) or "(no calls)"


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
    """
    if plan_format not in ("text", "json"):
        raise GraphError(f"plan_format must be 'text' or 'json', got {plan_format!r}")
    if max_replans < 0:
        raise GraphError(f"max_replans must be >= 0, got {max_replans}")
    lib = library(prompts)
    json_planner = planner.with_options(output=json_plan_model(tools))

    async def text_round(ctx: RunContext, prompt: str, r: int, executor: Executor, origin: float) -> tuple[Any, dict[int, TaskRun]]:
        parser = PlanParser(tools)
        queue: asyncio.Queue[Task | None] = asyncio.Queue()
        problems: list[PlanError] = []

        def on_text(delta: str) -> None:
            if problems or parser.done:
                return
            try:
                for task in parser.feed(delta):
                    queue.put_nowait(task)
            except PlanError as exc:
                problems.append(exc)

        async def write() -> Any:
            try:
                reply = await ask(ctx, planner, user(prompt), f"plan{r}", on_text=on_text, stop=[END_OF_PLAN])
                if not problems and not parser.done:
                    for task in parser.close():
                        queue.put_nowait(task)
                return reply
            except PlanError as exc:
                problems.append(exc)
                return None
            finally:
                queue.put_nowait(None)

        async def stream() -> AsyncIterator[Task]:
            while (task := await queue.get()) is not None:
                yield task

        writing = asyncio.ensure_future(write())
        runs = await executor.run(stream(), origin=origin)
        reply = await writing
        if problems:
            raise problems[0]
        return reply, runs

    async def json_round(ctx: RunContext, prompt: str, r: int, executor: Executor, origin: float) -> tuple[Any, dict[int, TaskRun]]:
        reply = await ask(ctx, json_planner, user(prompt), f"plan{r}")
        tasks = parse_json_plan(reply.parsed.model_dump(), tools)
        return reply, await executor.run(tasks, origin=origin)

    async def solve(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = state["question"]
        previous: list[str] = []
        rounds: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        memo: dict[str, Any] = {}
        answer = None
        for r in range(max_replans + 1):
            ctx.emit({"type": "round_started", "round": r + 1, "agents": [planner.name, joiner.name]})
            prompt = lib.render("plan_and_execute/plan", question=question, tools=_tools_for_prompt(tools),
                                end_of_plan=END_OF_PLAN, previous="\n\n".join(previous))  # fmt: skip
            executor = Executor(tools, on_failure=on_failure, key=ctx.key("plan", r), memo=memo)
            origin = time.perf_counter()
            try:
                reply, runs = await (text_round if plan_format == "text" else json_round)(ctx, prompt, r, executor, origin)
            except (PlanError, ToolError, OutputParseError) as exc:  # the planner tries again
                record = {"round": r + 1, "plan_error": str(exc), "tasks": [t.as_dict() for t in executor.runs.values()]}
                rounds.append(record)
                previous.append(f"Plan {r + 1} could not be run: {exc}")
                continue
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, round=r + 1, step="plan"))
            pad = _scratchpad(runs)
            last = r == max_replans
            join_prompt = lib.render("plan_and_execute/join", question=question, scratchpad=pad, can_replan=not last)
            verdict = await ask(ctx, joiner, user(join_prompt), f"join{r}")
            decision, argument = parse_decision(verdict.text)
            if last:
                decision = "finish"
            entries.append(turn(ctx, verdict, text=verdict.text, answer=argument if decision == "finish" else None,
                                prompt=join_prompt, round=r + 1, step="join"))  # fmt: skip
            rounds.append({"round": r + 1, "plan": reply.text, "decision": decision, "reason": argument,
                           "tasks": [runs[i].as_dict() for i in sorted(runs)],
                           "makespan_s": max((t.ended or 0.0) for t in runs.values())})  # fmt: skip
            if decision == "finish":
                answer = argument
                break
            previous.append(f"Plan {r + 1}:\n{reply.text}\nResults:\n{pad}\nWhy a new plan is needed: {argument}")
        if answer is None:
            raise PlanError(f"no plan could be run in {max_replans + 1} round(s): {rounds[-1].get('plan_error')}")
        return {"answer": answer, "text": answer, "transcript": entries,
                "details": {"rounds": rounds, "replans": len(rounds) - 1, "format": plan_format}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("solve", solve, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "solve")
    graph.add_edge("solve", END)
    return graph


def react(agent: Agent, tools: ToolRegistry, *, max_steps: int = 8, prompts: PromptLibrary | None = None,
          name: str = "react") -> Graph:  # fmt: skip
    """ReAct: think, call one tool, observe, repeat; the sequential baseline."""
    if max_steps < 1:
        raise GraphError(f"react needs max_steps >= 1, got {max_steps}")
    lib = library(prompts)

    async def loop(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        history = ""
        steps: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for step in range(max_steps):
            prompt = lib.render("plan_and_execute/react", question=state["question"],
                                tools=_tools_for_prompt(tools), history=history)  # fmt: skip
            reply = await ask(ctx, agent, user(prompt), f"step{step}", stop=["Observation:"])
            entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step=step))
            answered = _REACT_ANSWER.search(reply.text)
            action = next((m for m in (_REACT_ACTION.search(ln) for ln in reply.text.splitlines()) if m), None)
            if answered and action is None:
                final = answered.group(1).strip()
                entries[-1]["answer"] = final
                return {"answer": final, "text": final, "transcript": entries,
                        "details": {"steps": steps, "tool_calls": len(steps)}}  # fmt: skip
            if action is None:
                observation = "error: write 'Action: tool(arguments)' or 'Answer: ...'"
                steps.append({"step": step, "error": observation})
            else:
                started = time.perf_counter()
                try:
                    positional, keywords, _ = parse_arguments(action.group(2))
                    tool = tools.get(action.group(1))
                    result, _ = await ctx.ledger.tool(tool, tool.bind(positional, keywords),
                                                      key=ctx.key(agent.name, f"step{step}", "tool"), agent=agent.name)  # fmt: skip
                    observation = str(result)
                except (PlanError, ToolError) as exc:
                    observation = f"error: {exc}"
                steps.append({"step": step, "tool": action.group(1), "observation": observation[:500],
                              "seconds": round(time.perf_counter() - started, 4)})  # fmt: skip
            history += f"\n{reply.text.strip()}\nObservation: {observation}\n"
        raise RunError(f"react did not answer within {max_steps} steps; raise max_steps")

    graph = Graph(name)
    graph.add_node("loop", loop, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "loop")
    graph.add_edge("loop", END)
    return graph


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


class ReactSpec(PatternSpec):
    """ReAct: one tool call per model turn (the sequential baseline)."""

    kind: Literal["react"]
    agent: str = Field(description="an agent name")
    tools: list[str] = Field(min_length=1)
    max_steps: int = Field(default=8, ge=1, le=50)


@register_pattern(PlanAndExecuteSpec)
def _build_plan_and_execute(spec: PlanAndExecuteSpec, b: Builder) -> Graph:
    return plan_and_execute(
        b.plain_agent(spec.planner, "planner", why="the planner streams its plan"),
        b.plain_agent(spec.joiner, "joiner", why="the joiner reads the results"),
        b.tools(spec.tools, "tools"), max_replans=spec.max_replans, plan_format=spec.plan_format,
        on_failure=spec.on_failure, prompts=b.prompts, name=b.name,
    )  # fmt: skip


@register_pattern(ReactSpec)
def _build_react(spec: ReactSpec, b: Builder) -> Graph:
    return react(b.plain_agent(spec.agent, "agent", why="it calls tools turn by turn"), b.tools(spec.tools, "tools"),
                 max_steps=spec.max_steps, prompts=b.prompts, name=b.name)  # fmt: skip
