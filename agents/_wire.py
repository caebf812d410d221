"""The OpenAI wire format: every response body concilium sends or records, built here.

Three parts speak it: the simulated server (a test double), ``concilium serve api``
(workflows as models) and the client side (``Completion.to_json``, the call record).
They all build their bodies with these functions, so a field is named and shaped in
one place. Pure data in, JSON-ready dicts out: no I/O, no concilium imports, which is
why both ``concilium.agents`` and ``concilium.serving`` can use it.

Reading a body back into a ``Completion`` is ``completion_from_openai`` (beside the
values it builds, in ``_types``); reading message text is :func:`message_text` here.
What a server sends is checked first against the reply models at the end of this
module (:func:`check_reply`, :func:`check_chunk`): a server is not trusted to send
the shape it promises.

Example:
    >>> body = chat_completion("r1", "m", [chat_choice(0, "hi")], usage(3, 1), created=0)
    >>> body["object"], body["choices"][0]["message"]["content"], body["usage"]["total_tokens"]
    ('chat.completion', 'hi', 4)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, NotRequired, TypedDict

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

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


# ----------------------------------------------------------- reading replies
#
# The shape concilium reads from a server, checked before it is used. Unknown fields
# are ignored (servers add their own), but every field concilium reads must have its
# documented type: a server that sends a number for the text or negative token
# counts gets a clear error instead of a traceback or a wrong total.


class ReplyShapeError(ValueError):
    """A reply (or a streamed event) does not have the chat-completions shape;
    the message says where and what (``choices[0].message.content: ...``)."""


def _utf8(text: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid text ({exc.reason} at {exc.start})") from None
    return text


_Text = Annotated[str, Field(strict=True), AfterValidator(_utf8)]
# 2**53: past any real count, and still exact as a JSON number in every reader
_Count = Annotated[int, Field(strict=True, ge=0, le=2**53)]


class _Reading(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TopLogprobReply(_Reading):
    token: _Text = ""
    logprob: float = 0.0


class TokenLogprobReply(_Reading):
    token: _Text = ""
    logprob: float = 0.0
    top_logprobs: list[TopLogprobReply] | None = None


class LogprobsReply(_Reading):
    content: list[TokenLogprobReply] | None = None


class MessageReply(_Reading):
    content: _Text | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChoiceReply(_Reading):
    index: _Count = 0
    message: MessageReply
    finish_reason: _Text | None = None
    logprobs: LogprobsReply | None = None


class UsageReply(_Reading):
    prompt_tokens: _Count | None = 0
    completion_tokens: _Count | None = 0


class ChatCompletionReply(_Reading):
    """A ``chat.completion`` body as concilium reads it: at least one choice."""

    id: _Text | None = ""
    model: _Text | None = ""
    choices: list[ChoiceReply] = Field(min_length=1)
    usage: UsageReply | None = None


class DeltaReply(_Reading):
    content: _Text | None = None


class DeltaChoiceReply(_Reading):
    index: _Count = 0
    delta: DeltaReply | None = None
    finish_reason: _Text | None = None
    logprobs: LogprobsReply | None = None


class ChunkReply(_Reading):
    """One streamed ``chat.completion.chunk`` (the usage-only last one has no choices)."""

    id: _Text | None = ""
    model: _Text | None = ""
    choices: list[DeltaChoiceReply] | None = None
    usage: UsageReply | None = None


def _shape_error(exc: ValidationError, what: str) -> ReplyShapeError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
    where = where.replace(".[", "[") or "the body"
    shown = repr(first.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    more = exc.error_count() - 1
    also = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    message = first["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if first["type"] == "too_short" and where == "choices":
        message = "empty (the server returned no answer)"
    return ReplyShapeError(f"{what} {where}: {message}, got {shown}{also}")


def check_reply(data: object) -> ChatCompletionReply:
    """``data`` checked as a ``chat.completion`` body, or ``ReplyShapeError`` saying
    where it is wrong.

    Example:
        >>> reply = check_reply(chat_completion("r", "m", [chat_choice(0, "hi")]))
        >>> reply.choices[0].message.content
        'hi'
        >>> try:
        ...     check_reply({"choices": [{"message": {"content": 42}}]})
        ... except ReplyShapeError as exc:
        ...     print(exc)
        the reply's choices[0].message.content: input should be a valid string, got 42
    """
    if not isinstance(data, Mapping):
        raise ReplyShapeError(f"the reply is not a JSON object but {_json_kind(data)}")
    try:
        return ChatCompletionReply.model_validate(data)
    except ValidationError as exc:
        raise _shape_error(exc, "the reply's") from None


def check_chunk(data: object) -> ChunkReply:
    """``data`` checked as one streamed ``chat.completion.chunk``."""
    if not isinstance(data, Mapping):
        raise ReplyShapeError(f"a streamed event is not a JSON object but {_json_kind(data)}")
    try:
        return ChunkReply.model_validate(data)
    except ValidationError as exc:
        raise _shape_error(exc, "a streamed event's") from None


def _json_kind(data: object) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if data is None else kinds.get(type(data), type(data).__name__)
