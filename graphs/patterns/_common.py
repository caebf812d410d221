"""Small helpers the patterns share, built on the public API only."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from concilium.agents import AgentReply, Message
from concilium.graphs import AnswerFormat, RunContext
from concilium.prompts import PromptLibrary, default_library


class Respondent(Protocol):
    """Anything that can fill an agent slot: an ``Agent`` or a graph used as one."""

    @property
    def name(self) -> str: ...

    async def run(
        self, messages: str | Sequence[Message], *, n: int = 1, key: str | None = None, **options: Any
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
    """One transcript entry: who said what, where, seeing what. It is also sent as a
    ``turn`` event, so streaming clients see each turn as it happens."""
    ctx.emit({"type": "turn", "agent": reply.agent, "text": text, "answer": answer,
              **{k: v for k, v in extra.items() if k in ("round", "sample", "step")}})  # fmt: skip
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


async def ask(
    ctx: RunContext,
    agent: Respondent,
    messages: str | Sequence[Message],
    tag: str,
    *,
    n: int = 1,
    **options: Any,
) -> AgentReply:
    """One call of ``agent`` under a key unique in the run (``<path>/<agent>/<tag>``),
    so a resumed run replays it."""
    return await agent.run(messages, n=n, key=ctx.key(agent.name, tag), **options)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def numbered(texts: Sequence[str], start: int = 1, label: str = "") -> str:
    """``1. first\\n2. second`` (``label`` goes before each number)."""
    return "\n".join(f"{label}{i}. {t}" if not label else f"{label} {i}: {t}" for i, t in enumerate(texts, start))


def distinct_names(agents: Sequence[Respondent], pattern: str) -> list[str]:
    """The agents' names, refusing repeats (each agent's calls are keyed by its name)."""
    from concilium._errors import GraphError

    names = [a.name for a in agents]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GraphError(f"{pattern} agents need distinct names; repeated: {repeated} (copy the agent with another name)")
    return names


def solve_messages(state: Mapping[str, Any], lib: PromptLibrary, prompt: str, fmt: AnswerFormat) -> list[dict[str, Any]]:
    """A bare question wrapped in the ``prompt`` template; a conversation as it is."""
    if is_bare_question(state):
        return user(lib.render(prompt, question=state["question"], answer_format=fmt.instruction))
    return [dict(m) for m in state["messages"]]


def sample_turns(ctx: RunContext, reply: AgentReply, fmt: AnswerFormat, prompt: str, first: int = 0) -> list[dict[str, Any]]:
    """One transcript entry per sample of a reply (``sample`` = first, first+1, ...);
    the request's tokens are counted once, on its first sample."""
    entries = [
        turn(ctx, reply, text=text, answer=fmt.extract(text), prompt=prompt, sample=first + j)
        for j, text in enumerate(reply.texts)
    ]
    for entry in entries[1:]:
        entry["prompt_tokens"] = entry["completion_tokens"] = 0
    return entries
