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
