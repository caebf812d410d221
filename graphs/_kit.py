"""The pattern kit: what a pattern needs beyond ``Graph``, all of it public.

A pattern's primitive is "ask an agent under a call key and record the turn":
``ask`` keys each call ``<node path>/<agent>/<tag>`` so a resumed run replays it
from the call record, and ``turn`` turns the reply into a ``Turn`` (a transcript
entry) and sends it as a ``turn`` event. Its twin for tools, ``use_tool``, keys a
tool call ``<node path>/<tool>/<tag>`` the same way and returns a ``ToolReply``:
the text a model reads and the value code reads. ``PatternOptions`` resolves the options
every pattern takes (answer format, prompt library, name) once; the rest are small
helpers for prompts and votes. Built-in patterns use nothing else, so a pattern of
your own can be written the same way.

Example:
    >>> from concilium.agents import Agent, FakeModel
    >>> from concilium.graphs import END, START, Graph, run_sync
    >>> from concilium.graphs.kit import PatternOptions, ask, conversation, turn
    >>> opts = PatternOptions("boxed", name="ask_once")
    >>> agent = Agent("a", FakeModel(fn=lambda agent, i, msgs: "\\\\boxed{4}").spec())
    >>> async def solve(state, ctx):
    ...     reply = await ask(ctx, agent, conversation(state, state["question"]), "solve")
    ...     entry = turn(
    ...         ctx,
    ...         reply,
    ...         text=reply.text,
    ...         answer=opts.fmt.extract(reply.text),
    ...         prompt=state["question"],
    ...     )
    ...     return {"answer": entry["answer"], "transcript": [entry]}
    >>> g = Graph(opts.name).add_node("solve", solve, writes=["answer", "transcript"])
    >>> _ = g.add_edge(START, "solve").add_edge("solve", END)
    >>> result = run_sync(g, "2+2?")
    >>> result.answer, result.transcript[0]["path"]
    ('4', 'solve')
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, Unpack, cast

from concilium._errors import GraphError
from concilium.agents import AgentReply, Message
from concilium.prompts import PromptLibrary
from concilium.tools import Tool, ToolText

from ._aggregators import AnswerFormat, Vote, answer_format, majority_vote
from ._confidence import has_top_logprobs, token_confidences, trace_confidences
from ._context import RunContext
from ._events import Turn, TurnEvent, TurnExtra


class Respondent(Protocol):
    """Anything that can fill an agent slot: an ``Agent`` or a graph used as one."""

    @property
    def name(self) -> str: ...

    async def run(
        self,
        messages: str | Sequence[Message],
        *,
        n: int = 1,
        key: str | None = None,
        **options: Any,
    ) -> AgentReply: ...


# ----------------------------------------------------------------- options


def prompt_library(prompts: PromptLibrary | None) -> PromptLibrary:
    """The given prompt library, or the built-in one."""
    return prompts if prompts is not None else _builtin_prompts()


@functools.cache
def _builtin_prompts() -> PromptLibrary:
    return PromptLibrary()  # the built-in templates only, made once


@dataclass(frozen=True)
class PatternOptions:
    """The options every pattern takes, resolved once when the pattern is built.

    Args:
        answer: how to extract an answer (``"boxed"``, ``"last_number"``,
            ``"option"``, ``{"regex": ...}``, ``{"field": ...}``, or an ``AnswerFormat``).
        prompts: the prompt library (default: the built-in templates).
        name: the pattern's graph name.

    Example:
        >>> opts = PatternOptions("last_number", name="mine")
        >>> opts.fmt.extract("so it is 42."), opts.name, "debate/initial" in opts.lib.names()
        ('42', 'mine', True)
    """

    answer: str | Mapping[str, str] | AnswerFormat = "boxed"
    prompts: PromptLibrary | None = None
    name: str = "pattern"
    fmt: AnswerFormat = field(init=False, repr=False, compare=False)
    lib: PromptLibrary = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Resolved here so a bad answer format fails when the pattern is built.
        fmt = self.answer if isinstance(self.answer, AnswerFormat) else answer_format(self.answer)
        object.__setattr__(self, "fmt", fmt)
        object.__setattr__(self, "lib", prompt_library(self.prompts))


# ------------------------------------------------------------------ asking


async def ask(
    ctx: RunContext,
    agent: Respondent,
    messages: str | Sequence[Message],
    tag: str,
    *,
    n: int = 1,
    **options: Any,
) -> AgentReply:
    """One call of ``agent`` under a key unique in the run, ``<path>/<agent>/<tag>``,
    so a resumed run replays it from the call record instead of asking again.

    ``tag`` must differ between the calls one agent makes in one node (``"r0"``,
    ``"r1"``, ``f"score{i}"``); ``options`` go to the request (``seed``,
    ``max_tokens``, ``logprobs``, ...).
    """
    return await agent.run(messages, n=n, key=ctx.key(agent.name, tag), **options)


@dataclass(frozen=True)
class ToolReply:
    """What one tool call gave.

    Attributes:
        tool: the tool's name.
        text: the result as a model reads it.
        value: the result as code uses it: the structured value of a tool that
            returns a ``ToolText`` (the evidence store's ``search``: its passages,
            IDs included, as dicts), otherwise the result itself (after a replay,
            as the call record keeps it: JSON data, or its text).
        replayed: whether it came from the call record instead of the tool.
        result: the result as the tool gave it (a ``ToolText`` is the text and the
            value in one), as a plan's later tasks get it for ``$N``.
    """

    tool: str
    text: str
    value: Any
    replayed: bool = False
    result: Any = field(default=None, repr=False, compare=False)


async def use_tool(
    ctx: RunContext,
    tool: Tool,
    arguments: Mapping[str, Any],
    tag: str,
    *,
    agent: str | None = None,
) -> ToolReply:
    """One call of ``tool`` under a key unique in the run, ``<path>/<tool>/<tag>``,
    so a resumed run replays it from the call record instead of calling it again
    (the twin of ``ask``). It is budgeted, traced and sent as a ``tool`` event by
    the run's ledger; ``agent`` names who asked for it in that event.

    ``tag`` must differ between the calls of one tool in one node (``"step0"``,
    ``f"q{i}/search"``).

    Raises:
        ToolError: the tool failed (its message is written for a model to read).
        BudgetExceeded: the run's ``max_tool_calls`` are used up.

    Example:
        >>> import asyncio
        >>> from concilium.graphs import current_run
        >>> def double(x: int) -> int:
        ...     "Double x."
        ...     return 2 * x
        >>> reply = asyncio.run(use_tool(current_run(), Tool.from_function(double), {"x": 21}, "d"))
        >>> reply.text, reply.value, reply.replayed
        ('42', 42, False)
    """
    key = ctx.key(tool.name, tag)
    result, replayed = await ctx.ledger.tool(tool, arguments, key=key, agent=agent)
    value = result.value if isinstance(result, ToolText) else result
    return ToolReply(tool.name, str(result), value, replayed, result)


def turn(
    ctx: RunContext,
    reply: AgentReply,
    *,
    text: str,
    answer: str | None,
    prompt: str,
    **extra: Unpack[TurnExtra],
) -> Turn:
    """One transcript entry: who said what, where, seeing what. It is also sent as a
    ``turn`` event, so streaming clients see each turn as it happens."""
    event: TurnEvent = {"type": "turn", "agent": reply.agent, "text": text, "answer": answer}
    if "round" in extra:
        event["round"] = extra["round"]
    if "sample" in extra:
        event["sample"] = extra["sample"]
    if "step" in extra:
        event["step"] = extra["step"]
    ctx.emit(event)
    entry = {
        "path": ctx.path,
        "agent": reply.agent,
        **extra,
        "prompt": prompt,
        "text": text,
        "answer": answer,
        "prompt_tokens": reply.usage.prompt_tokens,
        "completion_tokens": reply.usage.completion_tokens,
    }
    return cast(Turn, entry)


def sample_turns(
    ctx: RunContext, reply: AgentReply, fmt: AnswerFormat, prompt: str, first: int = 0
) -> list[Turn]:
    """One transcript entry per sample of a reply (``sample`` = first, first+1, ...,
    ``request`` = first for all of them); the request's tokens are counted once, on its
    first sample. Each entry also says what later analysis of the samples needs: the
    sample's own completion tokens where they are known exactly (``sample_tokens``,
    else ``None``), when the server returned logprobs their mean (``mean_logprob``),
    and when it returned the top-k logprobs too, DeepConf's scores of the trace
    (``trace_confidences``: ``mean``, ``lowest_group``, ``bottom_10``, ``tail`` over
    windows of 2048 tokens; see ``trace_confidences``) and its token confidences
    (``token_confidences``, 3 decimals), from which any window can be replayed.

    Example:
        >>> from concilium.agents import AgentReply, TokenLogprob, Usage
        >>> from concilium.graphs import current_run
        >>> lp = (TokenLogprob("4", -0.5), TokenLogprob(".", -1.5))
        >>> reply = AgentReply("a", ("4.", "5"), Usage(9, 3), 0.1, "m", logprobs_all=(lp, None))
        >>> fmt = PatternOptions("last_number").fmt
        >>> one, two = sample_turns(current_run(), reply, fmt, "q")
        >>> one["sample_tokens"], one["mean_logprob"], two["sample_tokens"], "mean_logprob" in two
        (2, -1.0, None, False)
        >>> "trace_confidences" in one  # no top-k lists: no DeepConf scores
        False
    """
    entries = [
        turn(
            ctx,
            reply,
            text=text,
            answer=fmt.extract(text),
            prompt=prompt,
            **_sample_fields(reply, j, sample=first + j, request=first),
        )
        for j, text in enumerate(reply.texts)
    ]
    for entry in entries[1:]:
        entry["prompt_tokens"] = entry["completion_tokens"] = 0
    return entries


def _sample_fields(reply: AgentReply, j: int, *, sample: int, request: int) -> TurnExtra:
    """Where sample ``j`` of ``reply`` came from, and its own tokens, mean logprob and
    DeepConf scores where the reply says them exactly (never the request's total split
    over choices); the scores are computed once here, and only from top-k logprobs."""
    fields: TurnExtra = {"sample": sample, "request": request, "sample_tokens": None}
    logprobs = reply.logprobs_all[j] if j < len(reply.logprobs_all) else None
    if logprobs:
        fields["sample_tokens"] = len(logprobs)
        fields["mean_logprob"] = sum(t.logprob for t in logprobs) / len(logprobs)
        if has_top_logprobs(logprobs):
            fields["trace_confidences"] = trace_confidences(logprobs)
            fields["token_confidences"] = [round(c, 3) for c in token_confidences(logprobs)]
    elif len(reply.texts) == 1 and reply.usage.completion_tokens > 0:
        fields["sample_tokens"] = reply.usage.completion_tokens
    return fields


class VoteUpdate(TypedDict):
    """The state update of a voting node: the winner, a reply carrying it, the tally."""

    answer: str | None
    text: str | None
    votes: dict[str, Any]


def report_vote(ctx: RunContext, entries: Sequence[Turn]) -> tuple[Vote, VoteUpdate]:
    """Majority-vote the entries' answers, send a ``vote`` event, and return the
    tally with the state update (the text is the first entry carrying the winner).

    Example:
        >>> from concilium.graphs import current_run
        >>> entries = [{"answer": a, "text": t} for a, t in [("7", "a"), ("8", "b"), ("8", "c")]]
        >>> tally, update = report_vote(current_run(), entries)
        >>> update["answer"], update["text"], tally.counts
        ('8', 'b', {'7': 1, '8': 2})
    """
    tally = majority_vote([e["answer"] for e in entries])
    ctx.emit({"type": "vote", "counts": tally.counts, "winner": tally.winner})
    carrier = next((e["text"] for e in entries if e["answer"] == tally.winner), None)
    return tally, {"answer": tally.winner, "text": carrier, "votes": tally.as_dict()}


# ----------------------------------------------------------------- prompts


def user(text: str) -> list[dict[str, Any]]:
    """``text`` as a one-message chat: ``[{"role": "user", "content": text}]``."""
    return [{"role": "user", "content": text}]


def numbered(texts: Sequence[str], start: int = 1, label: str = "") -> str:
    """``1. first\\n2. second`` (with ``label``: ``Answer 1: first``).

    Example:
        >>> print(numbered(["yes", "no"], label="Answer"))
        Answer 1: yes
        Answer 2: no
    """
    lines = enumerate(texts, start)
    return "\n".join(f"{label} {i}: {t}" if label else f"{i}. {t}" for i, t in lines)


def last_user_text(messages: Sequence[Message]) -> str:
    """The content of the last user message ("" if there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


# ------------------------------------------------------------ the conversation
#
# One rule for every pattern (docs/methods.md, "Conversation"): the input's last user
# message is the question; everything before it (system message, earlier turns,
# few-shot examples) is its history. Every call an agent makes gets that history
# unchanged, in order, then the pattern's own prompt for the step (which carries the
# question) as the last user message. An agent's own system prompt is added after the
# conversation's system message (``Agent``), never in place of it.


def history(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conversation before its question: the system message, earlier turns and
    few-shot examples, in order (every message before the last user message).

    Raises:
        UserError: messages follow the last user message (an assistant prefill):
            a workflow answers the last user message, so it must end the input.

    Example:
        >>> shot = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
        >>> state = {
        ...     "messages": [
        ...         {"role": "system", "content": "Be brief."},
        ...         *shot,
        ...         {"role": "user", "content": "2+2?"},
        ...     ]
        ... }
        >>> [m["role"] for m in history(state)]
        ['system', 'user', 'assistant']
        >>> history({"messages": [{"role": "user", "content": "2+2?"}]})
        []
    """
    messages: Sequence[Message] = state.get("messages") or ()
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        return []
    last = users[-1]
    trailing = [str(m.get("role")) for m in messages[last + 1 :]]
    if trailing:
        from concilium._errors import UserError

        raise UserError(
            f"the conversation ends with {trailing} message(s) after its last user message; "
            "a workflow answers the last user message, so end the messages with it"
        )
    return [dict(m) for m in messages[:last]]


def conversation(state: Mapping[str, Any], text: str) -> list[dict[str, Any]]:
    """The messages of one call: the conversation's ``history`` then ``text``, the
    pattern's prompt for this step, as the last user message. For a bare question it
    is ``user(text)``.

    Example:
        >>> state = {
        ...     "messages": [
        ...         {"role": "system", "content": "Be brief."},
        ...         {"role": "user", "content": "2+2?"},
        ...     ]
        ... }
        >>> [(m["role"], m["content"]) for m in conversation(state, "Solve: 2+2?")]
        [('system', 'Be brief.'), ('user', 'Solve: 2+2?')]
    """
    return [*history(state), *user(text)]


def with_system(messages: Sequence[Message], text: str) -> list[dict[str, Any]]:
    """``messages`` with ``text`` added to their system message (after the
    conversation's own, never in place of it), or as the first message when there
    is none: how a pattern gives an agent its role for one call.

    Example:
        >>> said = with_system([{"role": "system", "content": "Be brief."}], "You are a critic.")
        >>> said[0]["content"]
        'Be brief.\\n\\nYou are a critic.'
        >>> with_system(user("2+2?"), "You are a critic.")[0]["role"]
        'system'
    """
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{text}"
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def solve_messages(
    state: Mapping[str, Any], lib: PromptLibrary, prompt: str, fmt: AnswerFormat
) -> list[dict[str, Any]]:
    """The question wrapped in the ``prompt`` template, after the conversation's
    history (``conversation``)."""
    text = lib.render(prompt, question=state["question"], answer_format=fmt.instruction)
    return conversation(state, text)


def distinct_names(agents: Sequence[Respondent], pattern: str) -> list[str]:
    """The agents' names, refusing repeats (each agent's calls are keyed by its name).

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> spec = FakeModel().spec()
        >>> distinct_names([Agent("a", spec), Agent("a", spec)], "debate")
        Traceback (most recent call last):
        ...
        concilium._errors.GraphError: debate agents need distinct names; repeated: ['a'] (copy ...
    """
    names = [a.name for a in agents]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GraphError(
            f"{pattern} agents need distinct names; repeated: {repeated} "
            "(copy the agent with another name)"
        )
    return names
