"""What a request to ``concilium serve api`` must be before a workflow runs on it.

:class:`RequestGuard` (ASGI middleware) sees every request first: on loopback its
``Host`` must name the server (DNS rebinding), a browser's ``Origin`` must be the
server itself (cross-site POSTs), a declared body over the limit gets 413 unread,
and no exception reaches uvicorn's plain-text 500. :func:`parse_request` reads a
chat body through pydantic models, so every malformed body is an OpenAI-format 400
that names the field, and content parts become text.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal, NamedTuple

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers

from concilium.agents import redact, wire

MAX_BODY = 1024 * 1024  # bytes of a request body; a chat request is a few KiB
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


class ChatRequest(BaseModel):
    """A chat-completions request. Sampling parameters (``temperature``, ``n``, ...)
    are accepted and ignored: each agent of the workflow has its own."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


class BadRequest(Exception):
    """A request body that cannot be run; ``str()`` is the message for the client."""


def _where(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


class Chat(NamedTuple):
    """A chat request as the run takes it: each message's content is text."""

    model: str
    messages: list[dict[str, str]]
    stream: bool


def parse_request(raw: bytes) -> Chat:
    """The model, messages (``{role, content}`` with text content) and ``stream`` of a
    chat request body.

    Raises:
        BadRequest: the body is not JSON, too deep, of the wrong shape, or has no
            user message with content; the message names the field.

    Example:
        >>> parse_request(
        ...     b'{"model": "m", "messages": [{"role": "user", "content": '
        ...     b'[{"type": "text", "text": "What is"}, {"type": "text", "text": "2+2?"}]}]}'
        ... )
        Chat(model='m', messages=[{'role': 'user', 'content': 'What is 2+2?'}], stream=False)
    """
    try:
        request = ChatRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise BadRequest(f"the request body is not JSON: {first['msg']}") from None
        where = _where(tuple(first["loc"])) or "the body"
        raise BadRequest(
            f"invalid request: {where}: {first['msg']}"
            + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
        ) from None
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
    return Chat(request.model, messages, request.stream)


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
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return error(
                403,
                f"this server answers to {sorted(self.hosts)} only, not Host {host[:100]!r}; "
                "use one of those addresses",
                "invalid_request_error",
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and origin.lower().partition("://")[2].rstrip("/") != host:
            return error(
                403,
                "cross-origin requests are refused; call the API from a program, not a web page",
                "invalid_request_error",
                "origin_not_allowed",
            )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return too_large(self.max_body)
        return None


def allowed_hosts(bind: tuple[str, int] | None) -> frozenset[str] | None:
    if bind is None or not is_loopback(bind[0]):
        return None
    port = bind[1]
    names = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == 80:
        names.update(LOOPBACK_NAMES)
    return frozenset(names)
