"""The OpenAI wire format: every response body concilium sends or records, built here.

Three parts speak it: the simulated server (a test double), ``concilium serve api``
(workflows as models) and the client side (``Completion.to_json``, the call record).
They all build their bodies with these functions, so a field is named and shaped in
one place. Pure data in, JSON-ready dicts out: no I/O, no concilium imports, which is
why both ``concilium.agents`` and ``concilium.serving`` can use it.

Reading a body back into a ``Completion`` is ``completion_from_openai`` (beside the
values it builds, in ``_types``); reading message text is :func:`message_text` here.

Example:
    >>> body = chat_completion("r1", "m", [chat_choice(0, "hi")], usage(3, 1), created=0)
    >>> body["object"], body["choices"][0]["message"]["content"], body["usage"]["total_tokens"]
    ('chat.completion', 'hi', 4)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

# A JSON object as it goes on the wire (bodies carry extension fields, hence Any).
JsonObject = dict[str, Any]

SSE_DONE = b"data: [DONE]\n\n"


class UsageBody(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprobBody(TypedDict):
    token: str
    logprob: float


class TokenLogprobBody(TypedDict):
    token: str
    logprob: float
    top_logprobs: list[TopLogprobBody]


class LogprobsBody(TypedDict):
    """Chat-completions logprobs: one entry per generated token."""

    content: list[TokenLogprobBody]


class TextLogprobsBody(TypedDict):
    """The legacy ``/v1/completions`` logprobs layout (parallel lists)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]


class FunctionBody(TypedDict):
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


class ToolCallBody(TypedDict):
    id: str
    type: str
    function: FunctionBody


class MessageBody(TypedDict):
    role: str
    content: str | None
    tool_calls: NotRequired[list[Mapping[str, object]]]  # ToolCallBody, or a provider's own


class ErrorDetail(TypedDict):
    message: str
    type: str
    code: str | int | None


class ErrorBody(TypedDict):
    error: ErrorDetail


class ModelCard(TypedDict):
    id: str
    object: str
    created: int
    owned_by: str


# ------------------------------------------------------------------ pieces


def usage(prompt_tokens: int, completion_tokens: int) -> UsageBody:
    """Token counts with their total."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def token_logprob(
    token: str, logprob: float, top: Iterable[tuple[str, float]] = ()
) -> TokenLogprobBody:
    """One generated token's entry in ``logprobs.content``."""
    return {
        "token": token,
        "logprob": logprob,
        "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top],
    }


def text_logprobs(logprobs: LogprobsBody) -> TextLogprobsBody:
    """Chat-style logprobs in the legacy text-completions layout."""
    content = logprobs["content"]
    return {
        "tokens": [t["token"] for t in content],
        "token_logprobs": [t["logprob"] for t in content],
        "top_logprobs": [{a["token"]: a["logprob"] for a in t["top_logprobs"]} for t in content],
    }


def tool_call(call_id: str, name: str, arguments: Mapping[str, Any] | str) -> ToolCallBody:
    """One function call of an assistant message (``arguments`` as a JSON string)."""
    args = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def message_text(content: object) -> str:
    """The text of a message's ``content``: a string, or OpenAI content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


# ----------------------------------------------------------------- choices


def chat_choice(
    index: int,
    content: str | None,
    finish_reason: str | None = "stop",
    *,
    logprobs: LogprobsBody | None = None,
    tool_calls: Sequence[Mapping[str, object]] = (),
) -> JsonObject:
    """A ``chat.completion`` choice (give ``content=None`` beside ``tool_calls`` for a pure call)."""
    message: MessageBody = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def text_choice(
    index: int,
    text: str,
    finish_reason: str | None = "stop",
    *,
    logprobs: LogprobsBody | None = None,
) -> JsonObject:
    """A ``text_completion`` choice (logprobs given chat-style, sent in the legacy layout)."""
    return {
        "index": index,
        "text": text,
        "logprobs": None if logprobs is None else text_logprobs(logprobs),
        "finish_reason": finish_reason,
    }


def delta_choice(
    index: int,
    delta: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    text: str | None = None,
    logprobs: LogprobsBody | None = None,
) -> JsonObject:
    """A streamed choice: a chat ``delta`` (or a completion's ``text``), finish reason last."""
    choice: JsonObject = {"index": index}
    if text is not None:
        choice["text"] = text
    else:
        choice["delta"] = dict(delta or {})
    if logprobs is not None:
        choice["logprobs"] = logprobs
    if finish_reason is not None:
        choice["finish_reason"] = finish_reason
    return choice


# ------------------------------------------------------------------ bodies


def _body(
    kind: str,
    rid: str,
    model: str,
    choices: Sequence[JsonObject],
    created: int | None,
    extra: Mapping[str, Any],
) -> JsonObject:
    return {
        "id": rid,
        "object": kind,
        "created": int(time.time()) if created is None else created,
        "model": model,
        **extra,
        "choices": list(choices),
    }


def chat_completion(
    rid: str,
    model: str,
    choices: Sequence[JsonObject],
    usage: UsageBody | Mapping[str, int] | None = None,
    *,
    created: int | None = None,
    **extra: Any,
) -> JsonObject:
    """A ``chat.completion`` body; ``extra`` adds fields such as ``system_fingerprint``."""
    body = _body("chat.completion", rid, model, choices, created, extra)
    if usage is not None:
        body["usage"] = dict(usage)
    return body


def text_completion(
    rid: str,
    model: str,
    choices: Sequence[JsonObject],
    usage: UsageBody | None = None,
    *,
    created: int | None = None,
    **extra: Any,
) -> JsonObject:
    """A ``text_completion`` body (``/v1/completions``)."""
    body = _body("text_completion", rid, model, choices, created, extra)
    if usage is not None:
        body["usage"] = dict(usage)
    return body


def chunk(
    rid: str,
    model: str,
    choices: Sequence[JsonObject],
    *,
    created: int | None = None,
    chat: bool = True,
    **extra: Any,
) -> JsonObject:
    """One streamed event: ``chat.completion.chunk`` (or a ``text_completion`` piece)."""
    return _body(
        "chat.completion.chunk" if chat else "text_completion", rid, model, choices, created, extra
    )


def error(message: str, kind: str, code: str | int | None = None) -> ErrorBody:
    """An OpenAI error body: what happened (with the fix), its type and code."""
    return {"error": {"message": message, "type": kind, "code": code}}


def model_card(model_id: str, owned_by: str, created: int = 0, **extra: Any) -> JsonObject:
    """One entry of ``/v1/models``."""
    card: ModelCard = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
    return {**card, **extra}


def model_list(cards: Iterable[JsonObject]) -> JsonObject:
    """The ``/v1/models`` body."""
    return {"object": "list", "data": list(cards)}


def sse(event: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying a JSON body (end the stream with ``SSE_DONE``)."""
    return f"data: {json.dumps(event)}\n\n".encode()
