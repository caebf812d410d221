"""Plain values that cross the transport boundary: usage, choices, completions.

Both transports (litellm and the direct aiohttp one) produce a ``Completion`` from the
same OpenAI-shaped JSON through :func:`completion_from_openai`, which is what makes
their results identical. The bodies themselves are built in ``_wire`` (the one module
that knows the OpenAI wire format).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from concilium._errors import MalformedReplyError

from . import _wire
from ._redact import redact

Message = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call or a whole run."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token, its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Choice:
    text: str
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """The parsed result of one chat-completions request (one or ``n`` choices)."""

    choices: tuple[Choice, ...]
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    id: str = ""
    replica: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A ``chat.completion`` body (``_wire``); ``completion_from_openai`` reads it back."""
        if len(self.choices) == 1:  # the usual reply: one plain choice, one body
            c = self.choices[0]
            if c.logprobs is None and not c.tool_calls:
                return _wire.chat_completion(
                    self.id, self.model, [_wire.chat_choice(0, c.text, c.finish_reason)],
                    _wire.usage(self.usage.prompt_tokens, self.usage.completion_tokens), created=0,
                )  # fmt: skip
        choices = [
            _wire.chat_choice(
                i,
                c.text,
                c.finish_reason,
                logprobs=None
                if c.logprobs is None
                else {
                    "content": [_wire.token_logprob(t.token, t.logprob, t.top) for t in c.logprobs]
                },
                tool_calls=c.tool_calls,
            )
            for i, c in enumerate(self.choices)
        ]
        usage = _wire.usage(self.usage.prompt_tokens, self.usage.completion_tokens)
        return _wire.chat_completion(self.id, self.model, choices, usage, created=0)


def _logprobs(raw: _wire.LogprobsReply | None) -> tuple[TokenLogprob, ...] | None:
    if raw is None or raw.content is None:
        return None
    return tuple(
        TokenLogprob(t.token, t.logprob, tuple((a.token, a.logprob) for a in t.top_logprobs or ()))
        for t in raw.content
    )


def completion_from_openai(
    data: Mapping[str, Any],
    replica: str | None = None,
    *,
    model: str | None = None,
    status: int | None = None,
) -> Completion:
    """Read an OpenAI chat-completions response (a dict) into a ``Completion``.

    The body is checked first (``_wire.check_reply``); one that is not a
    chat-completions reply (no choices, a number for the text, negative token
    counts, a lone surrogate) raises ``MalformedReplyError`` naming ``model``, the
    ``replica`` it came from (credentials masked) and what is wrong. It is
    retryable only when ``status`` says the server failed (5xx).

    Example:
        >>> completion_from_openai({"choices": [{"message": {"content": "hi"}}]}).choices[0].text
        'hi'
        >>> try:
        ...     completion_from_openai({"choices": []}, "http://h/v1", model="m")
        ... except MalformedReplyError as exc:
        ...     print(exc.retryable, exc.api_base, "choices: empty" in str(exc))
        False http://h/v1 True
    """
    plain = _plain_completion(data, replica)
    if plain is not None:
        return plain
    try:
        reply = _wire.check_reply(data)
    except _wire.ReplyShapeError as exc:
        raise malformed_reply(str(exc), replica, model=model, status=status) from None
    choices = sorted(reply.choices, key=lambda c: c.index)
    usage = reply.usage or _wire.UsageReply()
    return Completion(
        choices=tuple(
            Choice(
                text=c.message.content or "",
                finish_reason=c.finish_reason,
                logprobs=_logprobs(c.logprobs),
                tool_calls=tuple(c.message.tool_calls or ()),
            )
            for c in choices
        ),
        usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0),
        model=reply.model or "",
        id=reply.id or "",
        replica=replica,
    )


_MAX_COUNT = 2**53  # as _wire's _Count


def _plain_completion(data: Mapping[str, Any], replica: str | None) -> Completion | None:
    """The common reply read without pydantic, or ``None`` for anything else.

    Validating a reply with ``_wire.check_reply`` cost ~8 us of CPU per call, most of
    what reading it costs. A reply of text choices only (no logprobs, no tool calls)
    whose every field concilium reads has exactly the type ``check_reply`` demands
    (a ``str`` of valid text, an ``int`` count in range, or null) is read here, into
    the ``Completion`` ``check_reply`` would have given; anything else (a wrong type,
    a missing message, logprobs, tool calls) returns ``None`` and goes through
    ``check_reply``, which accepts it or says what is wrong. A test holds the two
    readers to the same results.
    """
    if type(data) is not dict:
        return None
    rid, name = data.get("id", ""), data.get("model", "")
    choices = data.get("choices")
    if not (_text_or_none(rid) and _text_or_none(name) and type(choices) is list and choices):
        return None
    read: list[tuple[int, Choice]] = []
    for c in choices:
        if type(c) is not dict:
            return None
        message, index, finish = c.get("message"), c.get("index", 0), c.get("finish_reason")
        if (
            type(message) is not dict
            or not (type(index) is int and 0 <= index <= _MAX_COUNT)
            or not (
                finish is None
                or (type(finish) is str and finish.isascii())
                or _text_or_none(finish)
            )
            or c.get("logprobs") is not None
            or message.get("tool_calls") is not None
        ):
            return None
        content = message.get("content")
        if not (type(content) is str and content.isascii()) and not _text_or_none(content):
            return None
        read.append((index, Choice(content or "", finish)))
    usage = data.get("usage")
    if usage is None:
        prompt = completion = 0
    elif type(usage) is dict:
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        if not (_count_or_none(prompt) and _count_or_none(completion)):
            return None
    else:
        return None
    if len(read) > 1:
        read.sort(key=lambda pair: pair[0])  # stable, as check_reply's reader sorts
    return Completion(
        choices=tuple(choice for _, choice in read),
        usage=Usage(prompt or 0, completion or 0),
        model=name or "",
        id=rid or "",
        replica=replica,
    )


def _text_or_none(value: object) -> bool:
    """``None``, or a ``str`` that is valid text (``_wire``'s ``_Text``)."""
    if value is None:
        return True
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_COUNT


def _count_or_none(value: object) -> bool:
    return value is None or _count(value)


def malformed_reply(
    message: str, replica: str | None, *, model: str | None, status: int | None = None
) -> MalformedReplyError:
    """The error for a reply that cannot be used; retryable only after a 5xx status."""
    return MalformedReplyError(
        message,
        model=model or "?",
        status=status,
        retryable=status is not None and status >= 500,
        api_base=replica and redact(replica),
    )
