"""Small helpers the patterns share, built on the public API only."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from concilium.agents import AgentReply, Message
from concilium.graphs import RunContext
from concilium.prompts import PromptLibrary, default_library


class Respondent(Protocol):
    """Anything that can fill an agent slot: an ``Agent`` or a graph used as one."""

    @property
    def name(self) -> str: ...

    async def run(
        self, messages: str | Sequence[Message], *, n: int = 1, key: str | None = None
    ) -> AgentReply: ...


def library(prompts: PromptLibrary | None) -> PromptLibrary:
    return prompts if prompts is not None else default_library


def last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def is_bare_question(state: Mapping[str, Any]) -> bool:
    """True when the input is just the question (not a conversation to continue)."""
    messages = state.get("messages") or []
    return len(messages) <= 1


def turn(
    ctx: RunContext,
    reply: AgentReply,
    *,
    text: str,
    answer: str | None,
    prompt: str,
    **extra: Any,
) -> dict[str, Any]:
    """One transcript entry: who said what, where, seeing what."""
    return {
        "path": ctx.path,
        "agent": reply.agent,
        **extra,
        "prompt": prompt,
        "text": text,
        "answer": answer,
        "prompt_tokens": reply.usage.prompt_tokens,
        "completion_tokens": reply.usage.completion_tokens,
    }
