"""Serve workflows as OpenAI-compatible models (``concilium serve api``).

Each workflow is a model in ``/v1/models``. ``POST /v1/chat/completions`` runs the
graph on the request's messages (the last user message is the question, the rest is
history) and returns its answer as the assistant message, with usage; the votes,
transcript and details are in the extension field ``concilium``. With
``stream: true`` each agent turn is sent as it happens as a ``reasoning_content``
delta, then the answer as ``content``. Requests run concurrently on one event loop.

What it guards against, since a request is untrusted input:

* The server binds to loopback unless given an API key of at least 16 characters;
  with a key, every ``/v1`` request needs ``Authorization: Bearer <key>``.
* On loopback, a request must name the server in its ``Host`` header
  (``127.0.0.1:PORT``, ``localhost:PORT`` or ``[::1]:PORT``), so a web page cannot
  reach it through DNS rebinding; a browser request from another origin is refused.
* A body over ``max_body`` bytes gets 413 without being read whole; every malformed
  body gets an OpenAI-format 4xx that says what is wrong.
* A client that goes away cancels its run; a failing stream sends an error event
  and ends with ``[DONE]``; error bodies are generic (the detail, credentials
  masked, goes to stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from concilium._errors import (
    BudgetExceeded,
    ConciliumError,
    ModelCallError,
    ModelError,
    UserError,
)
from concilium.agents import Usage, redact, wire

if TYPE_CHECKING:
    from concilium.graphs import RunResult
    from concilium.graphs.workflows import Workflow

MAX_BODY = 1024 * 1024  # bytes of a request body; a chat request is a few KiB
MIN_KEY_LENGTH = 16  # characters of an API key that guards a server beyond loopback
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(wire.error(message, kind, code), status_code=status)


def _log(message: str) -> None:
    """One line on stderr, credentials masked: the detail an error body leaves out."""
    print(f"concilium serve api: {redact(message)}", file=sys.stderr, flush=True)


def _usage(usage: Usage) -> wire.UsageBody:
    return wire.usage(usage.prompt_tokens, usage.completion_tokens)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without a real API key, and refuse a blank key.

    Raises:
        UserError: beyond loopback without a key, or with one shorter than 16
            characters; anywhere with a key of only spaces. The message says the fix.

    Example:
        >>> check_bind("127.0.0.1", None)
        >>> check_bind("0.0.0.0", "short")
        Traceback (most recent call last):
        ...
        concilium._errors.UserError: --api-key is 5 characters; serving beyond loopback needs ...
    """
    make_one = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
    if api_key and not api_key.strip():
        raise UserError(f"--api-key is blank; give a real key ({make_one}) or none on loopback")
    if _is_loopback(host):
        return
    if not api_key:
        raise UserError(
            f"refusing to serve on {host} without an API key: anyone who can reach it could spend "
            "your models' compute; pass --api-key KEY (or CONCILIUM_API_KEY), or bind 127.0.0.1"
        )
    if len(api_key.strip()) < MIN_KEY_LENGTH:
        raise UserError(
            f"--api-key is {len(api_key.strip())} characters; serving beyond loopback needs "
            f"at least {MIN_KEY_LENGTH} ({make_one}), or bind 127.0.0.1"
        )


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


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> JSONResponse:
    return _error(
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
            _log(f"{scope.get('path')}: {type(exc).__name__}: {exc}")
            if not started:
                await _error(500, "internal error; see the server's log", "server_error")(
                    scope, receive, send
                )

    def _refusal(self, headers: Headers) -> Response | None:
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return _error(
                403,
                f"this server answers to {sorted(self.hosts)} only, not Host {host[:100]!r}; "
                "use one of those addresses",
                "invalid_request_error",
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and origin.lower().partition("://")[2].rstrip("/") != host:
            return _error(
                403,
                "cross-origin requests are refused; call the API from a program, not a web page",
                "invalid_request_error",
                "origin_not_allowed",
            )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return _too_large(self.max_body)
        return None


def _allowed_hosts(bind: tuple[str, int] | None) -> frozenset[str] | None:
    if bind is None or not _is_loopback(bind[0]):
        return None
    port = bind[1]
    names = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == 80:
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


# --------------------------------------------------------------- the answers


def _text(result: RunResult) -> str:
    return "" if result.answer is None else str(result.answer)


def _extension(result: RunResult) -> dict[str, Any]:
    data = result.to_json()
    return {k: data.get(k) for k in ("answer", "votes", "transcript", "details", "calls", "run_id")}


def _failure(exc: Exception, rid: str, name: str) -> tuple[int, wire.ErrorBody]:
    """The status and generic body for a failed run; the detail goes to stderr."""
    _log(f"{rid} ({name}): {type(exc).__name__}: {exc}")
    if isinstance(exc, UserError):
        return 400, wire.error(redact(str(exc)), "invalid_request_error")
    if isinstance(exc, BudgetExceeded):
        return 500, wire.error(
            f"workflow {name!r} ran out of its budget ({exc.what})", "server_error", "budget"
        )
    if isinstance(exc, ModelError):
        status = f" (status {exc.status})" if isinstance(exc, ModelCallError) and exc.status else ""
        message = f"a model call of workflow {name!r} failed{status}; see the server's log"
        return 502, wire.error(message, "server_error", "model_error")
    kind = "run failed" if isinstance(exc, ConciliumError) else "internal error"
    return 500, wire.error(f"{kind} in workflow {name!r}; see the server's log", "server_error")


async def _stream(
    workflow: Workflow, messages: list[Any], rid: str, name: str
) -> AsyncIterator[bytes]:
    """Each agent turn as a ``reasoning_content`` delta, then the answer, usage and
    extension; a failure as an error event. Always ends with ``[DONE]``."""
    from concilium.graphs import stream

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = wire.delta_choice(0, delta, finish)
        choice.setdefault("finish_reason", None)  # every chunk names it, as OpenAI's do
        return wire.sse(wire.chunk(rid, name, [choice], **extra))

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in stream(workflow.graph, messages, budget=workflow.budget):
            if event["type"] == "turn":
                where = f"round {event['round']} " if "round" in event else ""
                yield chunk({"reasoning_content": f"[{where}{event['agent']}] {event['text']}\n"})
            elif event["type"] == "result":
                result = event["result"]
                yield chunk({"content": _text(result)})
                yield chunk({}, "stop", usage=_usage(result.usage), concilium=_extension(result))
    except Exception as exc:  # the client gets an error event, then a clean end
        yield wire.sse(_failure(exc, rid, name)[1])
    yield wire.SSE_DONE


async def _until_disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body is read by now)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _run_while_connected(
    request: Request, workflow: Workflow, messages: list[Any]
) -> RunResult | None:
    """The run's result, or ``None`` when the client went away first (the run is
    cancelled then, its model calls with it)."""
    from concilium.graphs import run

    task = asyncio.ensure_future(run(workflow.graph, messages, budget=workflow.budget))
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _chat_completion(
    request: Request, workflows: Mapping[str, Workflow], max_body: int
) -> Response:
    """Answer one chat request: read and check the body, then run the workflow it names."""
    raw = await _read_body(request, max_body)
    if raw is None:
        return _too_large(max_body)
    try:
        name, messages, streamed = parse_request(raw)
    except BadRequest as exc:
        return _error(400, str(exc), "invalid_request_error")
    if name not in workflows:
        return _error(
            404,
            f"no model {name[:100]!r}; models: {sorted(workflows)}",
            "invalid_request_error",
            "model_not_found",
        )
    workflow = workflows[name]
    rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if streamed:
        return StreamingResponse(
            _stream(workflow, messages, rid, name), media_type="text/event-stream"
        )
    try:
        result = await _run_while_connected(request, workflow, messages)
    except Exception as exc:
        status, body = _failure(exc, rid, name)
        return JSONResponse(body, status_code=status)
    if result is None:
        _log(f"{rid} ({name}): the client went away; its run was cancelled")
        return Response(status_code=499)
    choice = wire.chat_choice(0, _text(result))
    body = wire.chat_completion(
        rid, name, [choice], _usage(result.usage), concilium=_extension(result)
    )
    return JSONResponse(body)


def create_app(
    workflows: Mapping[str, Workflow],
    *,
    api_key: str | None = None,
    bind: tuple[str, int] | None = None,
    max_body: int = MAX_BODY,
) -> FastAPI:
    """A FastAPI app serving ``workflows`` (name -> loaded ``Workflow``).

    Args:
        workflows: the models to serve, by name.
        api_key: when set, every ``/v1`` request needs ``Authorization: Bearer <key>``.
        bind: the (host, port) the server listens on; on loopback a request's ``Host``
            must be one of ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT``.
        max_body: the largest request body in bytes (413 beyond).

    Example:
        >>> app = create_app({}, bind=("127.0.0.1", 8080))
        >>> app.title
        'concilium'
    """
    app = FastAPI(title="concilium", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard, hosts=_allowed_hosts(bind), max_body=max_body)
    created = int(time.time())

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    def unauthorized() -> JSONResponse:
        return _error(
            401,
            "missing or wrong API key; send Authorization: Bearer <key>",
            "authentication_error",
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        return wire.model_list(
            wire.model_card(
                name, "concilium", created, description=wf.spec.description or wf.spec.workflow.kind
            )
            for name, wf in workflows.items()
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return await _chat_completion(request, workflows, max_body)

    return app
