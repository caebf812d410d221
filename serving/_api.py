"""Serve workflows as OpenAI-compatible models (``concilium serve api``).

Each workflow is a model in ``/v1/models``. ``POST /v1/chat/completions`` runs the
graph on the request's messages (the last user message is the question, the rest is
history) and returns its answer as the assistant message, with usage; the votes,
transcript and details are in the extension field ``concilium``. With
``stream: true`` each agent turn is sent as it happens as a ``reasoning_content``
delta, then the answer as ``content``. Requests run concurrently on one event loop.

The server binds to loopback unless given an API key; with a key, every ``/v1``
request needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from concilium._errors import ConciliumError, UserError
from concilium.agents import Usage, wire


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(wire.error(message, kind, code), status_code=status)


def _usage(usage: Usage) -> wire.UsageBody:
    return wire.usage(usage.prompt_tokens, usage.completion_tokens)


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without an API key."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise UserError(
            f"refusing to serve on {host} without an API key: anyone who can reach it could spend "
            "your models' compute; pass --api-key KEY (or CONCILIUM_API_KEY), or bind 127.0.0.1"
        )


def _text(result: Any) -> str:
    return "" if result.answer is None else str(result.answer)


def _extension(result: Any) -> dict[str, Any]:
    data = result.to_json()
    return {k: data.get(k) for k in ("answer", "votes", "transcript", "details", "calls", "run_id")}


async def _stream(workflow: Any, messages: list[Any], rid: str, name: str) -> AsyncIterator[bytes]:
    """Each agent turn as a ``reasoning_content`` delta, then the answer, usage and extension."""
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
    except ConciliumError as exc:
        yield wire.sse(wire.error(str(exc), "concilium_error"))
    yield wire.SSE_DONE


def _chat_request(
    body: object, workflows: Mapping[str, Any]
) -> JSONResponse | tuple[str, list[Any]]:
    """(model name, messages) of a valid chat request, else the error response."""
    name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(body, dict) or name not in workflows:
        return _error(
            404,
            f"no model {name!r}; models: {sorted(workflows)}",
            "invalid_request_error",
            "model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "user" for m in messages
    ):
        return _error(
            400, "'messages' must be a list with at least one user message", "invalid_request_error"
        )
    return str(name), messages


def create_app(workflows: Mapping[str, Any], *, api_key: str | None = None) -> FastAPI:
    """A FastAPI app serving ``workflows`` (name -> loaded ``Workflow``)."""
    from concilium.graphs import run

    app = FastAPI(title="concilium", docs_url=None, redoc_url=None)
    created = int(time.time())

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if not authorized(request):
            return _error(
                401,
                "missing or wrong API key; send Authorization: Bearer <key>",
                "authentication_error",
            )
        return wire.model_list(
            wire.model_card(
                name, "concilium", created, description=wf.spec.description or wf.spec.workflow.kind
            )
            for name, wf in workflows.items()
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        if not authorized(request):
            return _error(
                401,
                "missing or wrong API key; send Authorization: Bearer <key>",
                "authentication_error",
            )
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON", "invalid_request_error")
        checked = _chat_request(body, workflows)
        if isinstance(checked, JSONResponse):
            return checked
        name, messages = checked
        workflow = workflows[name]
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            return StreamingResponse(
                _stream(workflow, messages, rid, name), media_type="text/event-stream"
            )
        try:
            result = await run(workflow.graph, messages, budget=workflow.budget)
        except ConciliumError as exc:
            return _error(
                500 if not isinstance(exc, UserError) else 400, str(exc), "concilium_error"
            )
        choice = wire.chat_choice(0, _text(result))
        return wire.chat_completion(
            rid, name, [choice], _usage(result.usage), concilium=_extension(result)
        )

    return app
