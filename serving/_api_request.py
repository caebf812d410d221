"""What a request to ``concilium serve api`` must be before a workflow runs on it.

:class:`RequestGuard` (ASGI middleware) sees every request first: its ``Host`` must
name the server (DNS rebinding) and a browser's ``Origin`` must be the server itself
(cross-site POSTs), by the rule of ``_bind.py``; a declared body over the limit gets
413 unread, and no exception reaches uvicorn's plain-text 500. :func:`parse_request` reads a
chat body through pydantic models, so every malformed body is an OpenAI-format 400
that names the field, and content parts become text.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal, NamedTuple

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers

from concilium.agents import Sampling, redact, wire

from ._bind import refusal

MAX_BODY = 1024 * 1024  # bytes of a request body; a chat request is a few KiB

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    """An OpenAI-format error response."""
    return JSONResponse(wire.error(message, kind, code), status_code=status)


def log(message: str) -> None:
    """One line on stderr, credentials masked: the detail an error body leaves out."""
    print(f"concilium serve api: {redact(message)}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- the request


class TextPart(BaseModel):
    """One OpenAI content part; only ``{"type": "text", "text": ...}`` is read."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message. Fields concilium does not use (``name``, ``tool_calls``) are
    accepted and left out, as an OpenAI client may send them."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    """``stream_options``: usage is always sent in a stream's last chunk."""

    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool | None = None


class JsonSchema(BaseModel):
    """``response_format.json_schema``: the schema the answer must match."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: ``text``, ``json_object`` or ``json_schema``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


MAX_N = 16  # independent runs one request may ask for
MAX_STOP = 4  # stop sequences, as OpenAI allows


class ChatRequest(BaseModel):
    """A chat-completions request: every field of OpenAI's API is either honoured
    (see ``docs/serving.md``) or, when it asks for something a workflow cannot do,
    refused by ``_refused``; a field OpenAI's API does not have is refused too."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # honoured: n runs; seed, temperature and max_tokens imposed on every call
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    # identifiers for a provider's own monitoring and caching: accepted, no effect
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # accepted only at their "off" value (see _REFUSED)
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: Any = None


_TOOLS = (
    "a workflow's agents call their own tools (its tools: section), not the client's; "
    "send the request without it"
)
_SAMPLING = (
    "each agent of a workflow has its own sampling settings; only seed, temperature "
    "and max_tokens can be imposed on all of them"
)
# field -> (is it "off"?, why it cannot be honoured otherwise)
_REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (lambda v: not v, _TOOLS),
    "functions": (lambda v: not v, _TOOLS),
    "tool_choice": (lambda v: v in (None, "none"), _TOOLS),
    "function_call": (lambda v: v in (None, "none"), _TOOLS),
    "logprobs": (
        lambda v: not v,
        "a workflow's answer is aggregated from many calls and has no token logprobs of its own",
    ),
    "top_logprobs": (lambda v: not v, "a workflow's answer has no token logprobs"),
    "top_p": (lambda v: v in (None, 1, 1.0), _SAMPLING),
    "frequency_penalty": (lambda v: not v, _SAMPLING),
    "presence_penalty": (lambda v: not v, _SAMPLING),
    "logit_bias": (lambda v: not v, _SAMPLING),
    "store": (lambda v: not v, "this server stores no completions"),
    "metadata": (lambda v: not v, "this server stores no completions to tag"),
    "modalities": (lambda v: v in (None, ["text"]), "workflows answer in text only"),
    "audio": (lambda v: v is None, "workflows answer in text only"),
    "prediction": (lambda v: v is None, "predicted outputs need one model call"),
    "service_tier": (lambda v: v in (None, "auto", "default"), "there is one tier"),
    "reasoning_effort": (
        lambda v: v is None,
        "a workflow's reasoning is its pattern; choose another workflow (model) for more or less",
    ),
    "verbosity": (lambda v: v is None, "a workflow's answer is its pattern's"),
    "web_search_options": (lambda v: v is None, "workflows search with their own tools"),
}


def _refused(request: ChatRequest) -> str | None:
    """Why the request asks for something a workflow cannot do, or ``None``."""
    for field, (off, why) in _REFUSED.items():
        value = getattr(request, field)
        if not off(value):
            return f"{field}={str(value)[:80]!r} is not supported: {why}"
    if request.stream and request.n not in (None, 1):
        return "n > 1 with stream=true is not supported; stream one run, or set stream=false"
    both = request.max_tokens and request.max_completion_tokens
    if both and request.max_tokens != request.max_completion_tokens:
        return "max_tokens and max_completion_tokens differ; send one of them"
    return None


class BadRequest(Exception):
    """A request body that cannot be run; ``str()`` is the message for the client."""


def _where(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


class Chat(NamedTuple):
    """A chat request as the run takes it: each message's content is text, and the
    fields that shape the runs (see ``ChatRequest``)."""

    model: str
    messages: list[dict[str, str]]
    stream: bool
    n: int = 1
    sampling: Sampling | None = None
    stop: tuple[str, ...] = ()
    response_format: ResponseFormat | None = None


def _check_schema(fmt: ResponseFormat | None) -> None:
    if fmt is None or fmt.type != "json_schema":
        return
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise BadRequest("response_format.json_schema.schema is required for type json_schema")
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(fmt.json_schema.schema_)
    except SchemaError as exc:
        raise BadRequest(
            f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}"
        ) from None


def parse_request(raw: bytes) -> Chat:
    """The model, messages (``{role, content}`` with text content), ``stream`` and
    run-shaping fields of a chat request body.

    Raises:
        BadRequest: the body is not JSON, too deep, of the wrong shape, has a field
            OpenAI's API does not have or one a workflow cannot honour, or has no
            user message with content; the message names the field.

    Example:
        >>> parse_request(
        ...     b'{"model": "m", "messages": [{"role": "user", "content": '
        ...     b'[{"type": "text", "text": "What is"}, {"type": "text", "text": "2+2?"}]}]}'
        ... ).messages
        [{'role': 'user', 'content': 'What is 2+2?'}]
    """
    try:
        request = ChatRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise BadRequest(f"the request body is not JSON: {first['msg']}") from None
        where = _where(tuple(first["loc"])) or "the body"
        if first["type"] == "extra_forbidden":
            raise BadRequest(
                f"unknown field {where!r}: it is not part of the chat completions API; remove it"
            ) from None
        raise BadRequest(
            f"invalid request: {where}: {first['msg']}"
            + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
        ) from None
    why = _refused(request)
    if why is not None:
        raise BadRequest(why)
    _check_schema(request.response_format)
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > MAX_STOP or not all(stop):
        raise BadRequest(f"stop: give at most {MAX_STOP} non-empty sequences, got {len(stop)}")
    messages: list[dict[str, str]] = []
    for i, message in enumerate(request.messages):
        content = message.content
        if content is None and message.role != "assistant":
            raise BadRequest(f"messages[{i}]: a {message.role} message needs content")
        if isinstance(content, list):
            other = sorted({p.type for p in content if p.type != "text" or p.text is None})
            if other:
                raise BadRequest(f"messages[{i}].content: only text parts are read; got {other}")
            content = " ".join(p.text or "" for p in content)
        messages.append({"role": message.role, "content": content or ""})
    if not any(m["role"] == "user" for m in messages):
        raise BadRequest("'messages' must be a list with at least one user message")
    max_tokens = request.max_tokens or request.max_completion_tokens
    sampling = None
    if request.seed is not None or request.temperature is not None or max_tokens:
        sampling = Sampling(request.seed, request.temperature, max_tokens)
    fmt = request.response_format
    return Chat(
        request.model,
        messages,
        request.stream,
        request.n or 1,
        sampling,
        stop,
        None if fmt is None or fmt.type == "text" else fmt,
    )


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> JSONResponse:
    return error(
        413, f"the request body is over {limit} bytes", "invalid_request_error", "body_too_large"
    )


# --------------------------------------------------------------- the guard


class RequestGuard:
    """ASGI middleware checked before any route: the ``Host`` allow-list, the
    ``Origin`` of browser requests, a declared ``Content-Length`` over the limit,
    and a last net that turns any escaped exception into a generic JSON 500."""

    def __init__(self, app: Asgi, *, hosts: frozenset[str] | None, max_body: int):
        self.app = app
        self.hosts = hosts
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(Headers(scope=scope))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # nothing reaches uvicorn's plain-text 500
            log(f"{scope.get('path')}: {type(exc).__name__}: {exc}")
            if not started:
                await error(500, "internal error; see the server's log", "server_error")(
                    scope, receive, send
                )

    def _refusal(self, headers: Headers) -> Response | None:
        foreign = refusal(headers.get("host"), headers.get("origin"), self.hosts)
        if foreign is not None:
            return error(403, foreign[1], "invalid_request_error", foreign[0])
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return too_large(self.max_body)
        return None
