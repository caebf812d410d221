"""Ordinary tool calling: the model asks for tool calls (OpenAI format), they run, the
results go back, until the model answers in text.

Several tool calls from one turn run concurrently; their results are appended in
the order the model made the calls, each with its ``tool_call_id``. A failed call
returns its error text to the model, which can correct itself; any other failure
(the budget, a cancellation) cancels the turn's other calls and is raised. Every
call goes through the ledger (``CallLedger.tool``) under the key
``<key>/t<turn>/<i>``, so a resumed run repeats none of them. With vLLM, start
the server with ``--enable-auto-tool-choice --tool-call-parser <family>`` (the
serving issue's capability registry fills that in per model family).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from concilium._errors import ModelError
from concilium._json import load_json
from concilium.tools import ToolError, ToolRegistry

from ._agent import Agent, AgentReply, as_messages
from ._ledger import current_ledger
from ._types import Message

T = TypeVar("T")


@dataclass
class ToolTurns:
    """The final reply, every tool call made (in order) and the whole conversation."""

    reply: AgentReply
    calls: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    messages: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])


async def run_with_tools(
    agent: Agent,
    messages: str | Sequence[Message],
    tools: ToolRegistry,
    *,
    max_turns: int = 8,
    key: str | None = None,
) -> ToolTurns:
    """Call ``agent`` with ``tools`` until it answers without a tool call.

    Raises:
        ModelError: the model still asks for tools after ``max_turns`` turns.
    """
    convo: list[dict[str, Any]] = [dict(m) for m in as_messages(messages)]
    calls: list[dict[str, Any]] = []
    base = key or agent.name
    for turn in range(max_turns):
        reply = await agent.run(convo, key=f"{base}/t{turn}", tools=tools.schemas())
        if not reply.tool_calls:
            return ToolTurns(reply, calls, [*convo, {"role": "assistant", "content": reply.text}])
        convo.append(
            {
                "role": "assistant",
                "content": reply.text or None,
                "tool_calls": list(reply.tool_calls),
            }
        )
        results = await _all_or_none(
            [
                _one(tools, call, f"{base}/t{turn}/{i}", agent.name)
                for i, call in enumerate(reply.tool_calls)
            ]
        )
        for call, (content, record) in zip(reply.tool_calls, results, strict=True):
            convo.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": content})
            calls.append({"turn": turn, **record})
    raise ModelError(
        f"agent {agent.name!r} still asked for tools after {max_turns} turns; raise max_turns or check its prompt"
    )


async def _all_or_none(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """The results in call order; the first failure cancels the others and is raised
    as itself (not wrapped in an exception group)."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _one(
    tools: ToolRegistry, call: Mapping[str, Any], key: str, agent: str
) -> tuple[str, dict[str, Any]]:
    function: Mapping[str, Any] = call.get("function") or {}
    name = str(function.get("name", ""))
    try:
        decoded: object = load_json(function.get("arguments") or "{}")
        if not isinstance(decoded, dict):
            raise ToolError(f"the arguments of {name} must be a JSON object")
        arguments = cast(dict[str, Any], decoded)
        tool = tools.get(name)
        result, _ = await current_ledger().tool(
            tool, arguments, key=key, call_id=call.get("id") or None, agent=agent
        )
        return str(result), {"tool": name, "arguments": arguments, "result": str(result)}
    except ValueError as exc:  # not JSON, or past a bound (JsonBoundsError): the model is told
        shown = repr(function.get("arguments"))[:300]
        error = f"the arguments of {name} are not a JSON object within bounds ({exc}): {shown}"
    except ToolError as exc:
        error = str(exc)
    return f"error: {error}", {"tool": name, "arguments": function.get("arguments"), "error": error}
