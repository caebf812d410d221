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

from . import _wire

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


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    if not raw:
        return None
    content = raw.get("content") if isinstance(raw, Mapping) else None
    if content is None:
        return None
    return tuple(
        TokenLogprob(
            token=t.get("token", ""),
            logprob=float(t.get("logprob", 0.0)),
            top=tuple(
                (a.get("token", ""), float(a.get("logprob", 0.0)))
                for a in (t.get("top_logprobs") or ())
            ),
        )
        for t in content
    )


def completion_from_openai(data: Mapping[str, Any], replica: str | None = None) -> Completion:
    """Read an OpenAI chat-completions response (a dict) into a ``Completion``."""
    choices = sorted(data.get("choices") or (), key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    return Completion(
        choices=tuple(
            Choice(
                text=(c.get("message") or {}).get("content") or "",
                finish_reason=c.get("finish_reason"),
                logprobs=_logprobs(c.get("logprobs")),
                tool_calls=tuple((c.get("message") or {}).get("tool_calls") or ()),
            )
            for c in choices
        ),
        usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        model=data.get("model") or "",
        id=data.get("id") or "",
        replica=replica,
    )
