"""ReAct (Yao et al., 2023; ``docs/methods.md#react``): think, call one tool, observe,
repeat; one tool call per model turn, the sequential baseline ``plan_and_execute`` is
measured against.

Each turn the agent sees the question, the tools and the history so far, and
writes either ``Action: tool(arguments)`` (the arguments read as in a plan line)
or ``Answer: ...``. The tool's result, or the error, is the next turn's
``Observation:``. Tool calls go through ``use_tool``, keyed
``<path>/<tool>/step<N>``, so a resumed run replays them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import Field

from concilium._errors import GraphError, RunError
from concilium.agents import Agent, AgentReply
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    Builder,
    PatternSpec,
    Turn,
    ask,
    conversation,
    prompt_library,
    register_pattern,
    turn,
    use_tool,
)
from concilium.prompts import PromptLibrary
from concilium.tools import ToolError, ToolRegistry
from concilium.tools.plans import PlanError, parse_arguments

# A tool name as in a plan line: letters, digits, _, - and . (MCP's get-sum, files.read).
_ACTION = re.compile(r"Action\s*:\s*([\w.-]+)\s*\((.*)\)\s*$", re.S)
_ANSWER = re.compile(r"^\s*Answer\s*:\s*(.+)", re.M | re.S)
_NO_ACTION = "error: write 'Action: tool(arguments)' or 'Answer: ...'"


def react(
    agent: Agent,
    tools: ToolRegistry,
    *,
    max_steps: int = 8,
    prompts: PromptLibrary | None = None,
    name: str = "react",
) -> Graph:
    """ReAct: think, call one tool, observe, repeat; the sequential baseline.

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> from concilium.tools import builtin_tools
        >>> fake = FakeModel({"r": ['Action: calculator("6 * 7")', "Answer: 42"]})
        >>> result = run_sync(react(Agent("r", fake.spec()), builtin_tools()), "6 x 7?")
        >>> result.answer, result.details["steps"][0]["observation"]
        ('42', '42')
    """
    if max_steps < 1:
        raise GraphError(f"react needs max_steps >= 1, got {max_steps}")
    setup = _React(agent, tools, prompt_library(prompts), max_steps)

    async def loop(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        return await _loop(setup, state, ctx)

    graph = Graph(name)
    graph.add_node("loop", loop, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "loop")
    graph.add_edge("loop", END)
    return graph


@dataclass(frozen=True)
class _React:
    """What every turn of one ``react`` graph uses."""

    agent: Agent
    tools: ToolRegistry
    lib: PromptLibrary
    max_steps: int


class _Step(TypedDict):
    """One turn that did not answer: the tool it called and what it saw, or the error."""

    step: int
    tool: NotRequired[str]
    observation: NotRequired[str]
    seconds: NotRequired[float]
    error: NotRequired[str]


async def _loop(r: _React, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Turn after turn until the agent answers without calling a tool."""
    history = ""
    steps: list[_Step] = []
    entries: list[Turn] = []
    for step in range(r.max_steps):
        prompt = r.lib.render("plan_and_execute/react", question=state["question"],
                              tools=_tools_for_prompt(r.tools), history=history)  # fmt: skip
        reply = await ask(
            ctx, r.agent, conversation(state, prompt), f"step{step}", stop=["Observation:"]
        )
        entries.append(_step_turn(ctx, reply, prompt, step))
        answered = _ANSWER.search(reply.text)
        action = next((m for m in map(_ACTION.search, reply.text.splitlines()) if m), None)
        if answered and action is None:
            final = answered.group(1).strip()
            entries[-1]["answer"] = final
            return {"answer": final, "text": final, "transcript": entries,
                    "details": {"steps": steps, "tool_calls": len(steps)}}  # fmt: skip
        observation, record = await _act(r, ctx, step, action)
        steps.append(record)
        history += f"\n{reply.text.strip()}\nObservation: {observation}\n"
    raise RunError(f"react did not answer within {r.max_steps} steps; raise max_steps")


def _step_turn(ctx: RunContext, reply: AgentReply, prompt: str, step: int) -> Turn:
    # ReAct numbers its steps (0, 1, ...) where other patterns name theirs ("plan").
    return turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step=step)


async def _act(
    r: _React, ctx: RunContext, step: int, action: re.Match[str] | None
) -> tuple[str, _Step]:
    """Call the tool the turn asked for; the observation (the result, or the error
    the agent reads and may correct) and the step's record."""
    if action is None:
        return _NO_ACTION, {"step": step, "error": _NO_ACTION}
    name, arguments = action.group(1), action.group(2)
    started = time.perf_counter()
    try:
        observation = await _call_tool(r, ctx, step, name, arguments)
    except (PlanError, ToolError) as exc:
        observation = f"error: {exc}"
    return observation, {"step": step, "tool": name, "observation": observation[:500],
                         "seconds": round(time.perf_counter() - started, 4)}  # fmt: skip


async def _call_tool(r: _React, ctx: RunContext, step: int, name: str, arguments: str) -> str:
    """One tool call with ``use_tool`` (budgeted, traced, replayed on resume); its text."""
    positional, keywords, _ = parse_arguments(arguments)
    tool = r.tools.get(name)
    reply = await use_tool(ctx, tool, tool.bind(positional, keywords), f"step{step}", agent=r.agent.name)  # fmt: skip
    return reply.text


def _tools_for_prompt(registry: ToolRegistry) -> list[dict[str, Any]]:
    return [{"name": t.name, "params": list(t.params), "description": t.description}
            for t in (registry.get(n) for n in registry.names())]  # fmt: skip


# -- workflow files -------------------------------------------------------------


class ReactSpec(PatternSpec):
    """ReAct: one tool call per model turn (the sequential baseline)."""

    kind: Literal["react"]
    agent: str = Field(description="an agent name")
    tools: list[str] = Field(min_length=1)
    max_steps: int = Field(default=8, ge=1, le=50)


@register_pattern(ReactSpec)
def _build_react(spec: ReactSpec, b: Builder) -> Graph:
    return react(b.plain_agent(spec.agent, "agent", why="it calls tools turn by turn"), b.tools(spec.tools, "tools"),
                 max_steps=spec.max_steps, prompts=b.prompts, name=b.name)  # fmt: skip
