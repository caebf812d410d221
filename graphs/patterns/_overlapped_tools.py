"""Overlapped tool calls, AsyncLM-style (Gim et al. 2024; ``docs/methods.md#overlapped-tools``):
a tool call the model writes starts while the model keeps decoding, and its result
is spliced back in.

On an OpenAI-compatible server, which cannot inject tokens into a stream, the protocol
is emulated:
the agent's reply is streamed with ``stop=["[TRAP][END]"]``; each
``[CALL] <id> [HEAD] tool("arg") [END]`` frame starts its tool the moment its
``[END]`` arrives in the stream (not when the reply ends). When the stream ends, the
pending calls are awaited, their results go back as ``[INTR] <id> [HEAD] result [END]``
frames in a user turn after the reply so far, and the model continues; at most
``max_rounds`` rounds. A call whose tool fails returns its error message as the
result. No preemptive interrupts (a result never cuts a stream short): each round
costs one request, as in the run-then-resume emulation. The answer is extracted from
the last round's text. Each round's tool calls are tasks of one ``task_group``: a
stream that fails cancels the calls it started, and nothing outlives the node.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from concilium.agents import Agent
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    AnswerFormat,
    AnswerSpec,
    Builder,
    PatternOptions,
    PatternSpec,
    Turn,
    ask,
    conversation,
    register_pattern,
    turn,
    use_tool,
    user,
)
from concilium.prompts import PromptLibrary
from concilium.tools import ToolError, ToolRegistry
from concilium.tools.plans import PlanError, parse_arguments

TRAP = "[TRAP][END]"
_CALL = re.compile(r"\[CALL\]\s*(\S+)\s*\[HEAD\]\s*([\w.-]+)\((.*?)\)\s*\[END\]", re.DOTALL)


@dataclass(frozen=True)
class CallFrame:
    """One ``[CALL] <id> [HEAD] tool(arguments) [END]`` frame a model wrote."""

    id: str
    tool: str
    arguments: str


def parse_calls(text: str) -> list[CallFrame]:
    """The complete call frames in ``text``, in order (a frame still being written,
    with no ``[END]`` yet, is not one).

    Example:
        >>> parse_calls('[CALL] c1 [HEAD] calculator("6*7") [END] so [CALL] c2 [HEAD] x(')
        [CallFrame(id='c1', tool='calculator', arguments='"6*7"')]
    """
    return [CallFrame(*match.groups()) for match in _CALL.finditer(text)]


async def run_call(
    ctx: RunContext, tools: ToolRegistry, frame: CallFrame, tag: str, *, agent: str | None = None
) -> str:
    """Run a frame's tool with ``use_tool`` (keyed ``<path>/<tool>/<tag>``, so a resumed
    run replays it) and give back its result frame, ``[INTR] <id> [HEAD] result [END]``;
    a call that cannot be read, names no tool of ``tools`` or fails has its error as
    the result, for the model to read."""
    try:
        positional, keywords, _ = parse_arguments(frame.arguments)
        tool = tools.get(frame.tool)
        reply = await use_tool(ctx, tool, tool.bind(positional, keywords), tag, agent=agent)
        result = reply.text
    except (ToolError, PlanError) as exc:
        result = f"error: {exc}"
    return f"[INTR] {frame.id} [HEAD] {result} [END]"


class _Dispatcher:
    """Watches a stream and starts each complete ``[CALL]`` frame's tool at once, as a
    task of the round's task group."""

    def __init__(
        self, tools: ToolRegistry, ctx: RunContext, agent: str, rnd: int, group: asyncio.TaskGroup
    ) -> None:
        self.tools, self.ctx, self.agent, self.rnd, self.group = tools, ctx, agent, rnd, group
        self.text = ""
        self.calls: list[dict[str, Any]] = []
        self.tasks: dict[str, asyncio.Task[str]] = {}

    def on_text(self, delta: str) -> None:
        self.text += delta
        for frame in parse_calls(self.text):
            if frame.id in self.tasks:
                continue
            self.calls.append({"id": frame.id, "tool": frame.tool, "round": self.rnd,
                               "dispatched_at_char": len(self.text)})  # fmt: skip
            call = run_call(self.ctx, self.tools, frame, f"r{self.rnd}/{frame.id}", agent=self.agent)  # fmt: skip
            self.tasks[frame.id] = self.group.create_task(call)

    async def frames(self) -> str:
        """The result frames, in the order the calls were written."""
        return "\n".join([await task for task in self.tasks.values()])


def overlapped_tools(
    agent: Agent,
    tools: ToolRegistry,
    *,
    max_rounds: int = 4,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    name: str = "overlapped_tools",
) -> Graph:
    """Stream the agent's reply and run each tool call it writes while it keeps writing.

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> from concilium.tools import builtin_tools
        >>> fake = FakeModel(
        ...     {"a": ['[CALL] c1 [HEAD] calculator("6*7") [END] ok [TRAP][END]', "\\\\boxed{42}"]}
        ... )
        >>> reg = builtin_tools()
        >>> result = run_sync(overlapped_tools(Agent("a", fake.spec()), reg), "6*7?")
        >>> result.answer, [c["tool"] for c in result.details["calls"]]
        ('42', ['calculator'])
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    opts = PatternOptions(answer, prompts, name)
    listed = [{"name": t.name, "description": t.description}
              for t in (tools.get(n) for n in tools.names())]  # fmt: skip

    async def run(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        question = state["question"]
        messages: list[dict[str, Any]] = conversation(
            state,
            opts.lib.render(
                "overlapped_tools/solve",
                question=question,
                tools=listed,
                answer_format=opts.fmt.instruction,
            ),
        )
        transcript: list[Turn] = []
        calls: list[dict[str, Any]] = []
        text = ""
        for rnd in range(1, max_rounds + 1):
            async with ctx.task_group() as group:  # a failed stream cancels its calls
                watch = _Dispatcher(tools, ctx, agent.name, rnd, group)
                started = time.perf_counter()
                reply = await ask(ctx, agent, messages, f"r{rnd}", on_text=watch.on_text, stop=[TRAP])  # fmt: skip
                streamed = time.perf_counter() - started
                text = watch.text or reply.text
                if not watch.text:  # a replayed call: nothing streamed, dispatch from the text
                    watch.on_text(reply.text)
                prompt_text = str(messages[-1]["content"])
                said = None if watch.tasks else opts.fmt.extract(text)  # calls: not final
                transcript.append(
                    turn(ctx, reply, text=text, answer=said, prompt=prompt_text, round=rnd)
                )
                for call in watch.calls:
                    call["stream_chars"] = len(text)
                    call["stream_seconds"] = round(streamed, 4)
                calls += watch.calls
                if not watch.tasks:
                    break
                frames = await watch.frames()
            messages = [*messages, {"role": "assistant", "content": text},
                        *user(opts.lib.render("overlapped_tools/results", frames=frames))]  # fmt: skip
        final = opts.fmt.extract(text)
        return {"answer": final, "text": text, "transcript": transcript,
                "details": {"rounds": len(transcript), "calls": calls}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("stream", run, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "stream")
    graph.add_edge("stream", END)
    return graph


# -- workflow files -------------------------------------------------------------


class OverlappedToolsSpec(PatternSpec):
    """Tool calls that run while the model keeps writing (AsyncLM-style)."""

    kind: Literal["overlapped_tools"]
    agent: str = Field(description="an agent name")
    tools: list[str] = Field(min_length=1)
    max_rounds: int = Field(default=4, ge=1, le=32)
    answer: AnswerSpec = "boxed"


@register_pattern(OverlappedToolsSpec)
def _build(spec: OverlappedToolsSpec, b: Builder) -> Graph:
    return overlapped_tools(
        b.plain_agent(spec.agent, "agent", why="it streams and calls tools mid-stream"),
        b.tools(spec.tools, "tools"), max_rounds=spec.max_rounds, answer=b.answer(spec.answer),
        prompts=b.prompts, name=b.name,
    )  # fmt: skip
