"""Serve workflows as OpenAI-compatible models (``concilium serve api``).

Each workflow is a model in ``/v1/models`` (with its description).
``POST /v1/chat/completions`` runs the graph on the request's messages (the last user
message is the question, the rest is history) and returns its answer as the assistant
message, with usage and the reasoning trace (each agent turn, then the vote) in
``reasoning_content``; the votes, transcript and details are in the extension field
``concilium``. With ``stream: true`` each agent turn is sent as it happens as a
``reasoning_content`` delta, then the answer as ``content``. ``POST /v1/responses``
(the Responses API) and ``POST /v1/completions`` (one prompt) are read by the same
rules (``_api_shapes``); a response carries the trace as a ``reasoning`` item's
summary. Requests run concurrently on one event loop.

What it guards against, since a request is untrusted input:

* Off the default address 127.0.0.1 (localhost, ::1) the server needs an API key of
  at least 16 characters; with a key, every ``/v1`` request needs
  ``Authorization: Bearer <key>``.
* A request must name the server's own address in its ``Host`` header and come from
  no other site's page (``Origin``), so a web page cannot reach it through DNS
  rebinding (the rule, shared with the UI and the MCP server, is in ``_bind.py``).
* A body over ``max_body`` bytes gets 413 without being read whole; every malformed
  body gets an OpenAI-format 4xx that says what is wrong.
* A client that goes away cancels its run; a failing stream sends an error event
  and ends with ``[DONE]``; error bodies are generic (the detail, credentials
  masked, goes to stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from concilium._errors import (
    BudgetExceeded,
    ConciliumError,
    ModelCallError,
    ModelError,
    UserError,
)
from concilium.agents import Sampling, Usage, redact, wire

from ._api_request import (
    MAX_BODY,
    BadRequest,
    Chat,
    RequestGuard,
    ResponseFormat,
    error,
    log,
    parse_request,
    read_body,
    too_large,
)
from ._api_shapes import (
    ResponseEvents,
    message_item,
    parse_completion,
    parse_responses,
    reasoning_item,
    response_body,
    text_completion_body,
)
from ._bind import allowed_hosts

if TYPE_CHECKING:
    from concilium.graphs import RunResult
    from concilium.graphs.workflows import Workflow


def _usage(usage: Usage) -> wire.UsageBody:
    return wire.usage(usage.prompt_tokens, usage.completion_tokens)


# --------------------------------------------------------------- the answers


def _text(result: RunResult) -> str:
    return "" if result.answer is None else str(result.answer)


class AnswerFormatError(Exception):
    """The run's answer does not match the request's ``response_format``."""


def _answer(result: RunResult, chat: Chat) -> str:
    """The answer as the request asked for it: cut at the first of its ``stop``
    sequences, and checked against its ``response_format`` (``AnswerFormatError``)."""
    text = _text(result)
    for stop in chat.stop:
        text = text.split(stop, 1)[0]
    if chat.response_format is not None:
        _check_format(text, chat.response_format)
    return text


def _check_format(text: str, fmt: ResponseFormat) -> None:
    from concilium._json import load_json

    try:
        value = load_json(text)
    except ValueError as exc:
        raise AnswerFormatError(f"the answer is not JSON ({exc}): {text[:200]!r}") from None
    if fmt.type == "json_object" and not isinstance(value, dict):
        raise AnswerFormatError(f"the answer is JSON but not an object: {text[:200]!r}")
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    if schema is not None:
        from jsonschema import Draft202012Validator

        error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the answer"
            raise AnswerFormatError(f"{where}: {error.message}")


def _format_instruction(messages: list[dict[str, str]], fmt: ResponseFormat | None) -> None:
    """Ask for JSON in the last user message (added to it, never replacing it)."""
    if fmt is None:
        return
    import json

    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    wanted = (
        "a JSON object" if schema is None else f"JSON matching this schema: {json.dumps(schema)}"
    )
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last] = {
        **messages[last],
        "content": f"{messages[last]['content']}\n\nGive the final answer as {wanted}",
    }


def _extension(result: RunResult) -> dict[str, Any]:
    data = result.to_json()
    return {k: data.get(k) for k in ("answer", "votes", "transcript", "details", "calls", "run_id")}


def _failure(exc: Exception, rid: str, name: str) -> tuple[int, wire.ErrorBody]:
    """The status and generic body for a failed run; the detail goes to stderr."""
    log(f"{rid} ({name}): {type(exc).__name__}: {exc}")
    if isinstance(exc, UserError):
        return 400, wire.error(redact(str(exc)), "invalid_request_error")
    if isinstance(exc, AnswerFormatError):
        message = f"workflow {name!r} answered outside the response_format: {exc}"
        return 502, wire.error(redact(message), "server_error", "invalid_answer_format")
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


def _turn_line(turn: Mapping[str, Any]) -> str:
    where = f"round {turn['round']} " if "round" in turn else ""
    return f"[{where}{turn['agent']}] {turn['text']}\n"


def _votes_line(votes: Mapping[str, Any]) -> str:
    """The final vote in one line, for clients that show only the reasoning trace."""
    counts: Mapping[str, float] = votes.get("counts") or {}
    tally = ", ".join(f"{a} x{c:g}" for a, c in sorted(counts.items(), key=lambda ac: -ac[1]))
    return f"[votes] {tally} -> {votes.get('winner')}\n"


def _trace(result: RunResult) -> str:
    """The reasoning trace of a run: each agent turn, then the vote."""
    lines = [_turn_line(t) for t in result.transcript]
    return "".join(lines) + (_votes_line(result.votes) if result.votes else "")


async def _pieces(workflow: Workflow, chat: Chat) -> AsyncIterator[str | RunResult]:
    """The run as it happens: each agent turn as a line of reasoning, the vote as a
    last line, then the result."""
    from concilium.graphs import stream

    options = {"budget": workflow.budget, "sampling": chat.sampling}
    async for event in stream(workflow.graph, chat.messages, **options):
        if event["type"] == "turn":
            yield _turn_line(event)
        elif event["type"] == "result":
            result = event["result"]
            if result.votes:
                yield _votes_line(result.votes)
            yield result


async def _stream(workflow: Workflow, chat: Chat, rid: str) -> AsyncIterator[bytes]:
    """Each agent turn (and the vote) as a ``reasoning_content`` delta, then the
    answer, usage and extension; a failure as an error event. Always ends with ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = wire.delta_choice(0, delta, finish)
        choice.setdefault("finish_reason", None)  # every chunk names it, as OpenAI's do
        return wire.sse(wire.chunk(rid, name, [choice], **extra))

    name = chat.model
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in _pieces(workflow, chat):
            if isinstance(piece, str):
                yield chunk({"reasoning_content": piece})
            else:
                yield chunk({"content": _answer(piece, chat)})
                yield chunk({}, "stop", usage=_usage(piece.usage), concilium=_extension(piece))
    except Exception as exc:  # the client gets an error event, then a clean end
        yield wire.sse(_failure(exc, rid, name)[1])
    yield wire.SSE_DONE


async def _stream_response(workflow: Workflow, chat: Chat, rid: str) -> AsyncIterator[bytes]:
    """A streamed Responses answer: the reasoning summary grows by one agent turn at a
    time (the vote last), then the answer and the completed response; a failure is an
    ``error`` event."""
    events = ResponseEvents(rid, chat)
    yield events.start()
    try:
        async for piece in _pieces(workflow, chat):
            if isinstance(piece, str):
                yield events.reasoning(piece)
            else:
                answer = _answer(piece, chat)
                yield events.finish(answer, _usage(piece.usage), concilium=_extension(piece))
    except Exception as exc:
        yield events.error(_failure(exc, rid, chat.model)[1])


async def _until_disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body is read by now)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _runs(workflow: Workflow, chat: Chat) -> list[RunResult]:
    """The request's ``n`` independent runs, at once; run ``i`` of a seeded request
    has seed ``seed + i`` (so a rerun is identical and the runs differ)."""
    from concilium.graphs import run

    def sampling(i: int) -> Sampling | None:
        s = chat.sampling
        return s if s is None or s.seed is None else dataclasses.replace(s, seed=s.seed + i)

    return list(
        await asyncio.gather(
            *(
                run(workflow.graph, chat.messages, budget=workflow.budget, sampling=sampling(i))
                for i in range(chat.n)
            )
        )
    )


async def _run_while_connected(
    request: Request, workflow: Workflow, chat: Chat
) -> list[RunResult] | None:
    """The runs' results, or ``None`` when the client went away first (the runs are
    cancelled then, their model calls with them)."""
    task = asyncio.ensure_future(_runs(workflow, chat))
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


API = Literal["chat", "responses", "completions"]
_PARSE: dict[API, Callable[[bytes], Chat]] = {
    "chat": parse_request,
    "responses": parse_responses,
    "completions": parse_completion,
}
_ID = {"chat": "chatcmpl", "responses": "", "completions": "cmpl"}


def _body(api: API, rid: str, chat: Chat, results: list[RunResult]) -> dict[str, Any]:
    """The answer of ``results`` in the shape of ``api``: the answer, usage, the
    reasoning trace where the API has a place for it, and the ``concilium`` extension."""
    answers = [_answer(r, chat) for r in results]  # AnswerFormatError before any body
    usage = _usage(sum((r.usage for r in results), Usage()))
    extension = _extension(results[0])
    if len(results) > 1:  # each run's work, in the order of the choices
        extension["choices"] = [_extension(r) for r in results]
    if api == "responses":
        trace = _trace(results[0])
        output = [reasoning_item(rid, trace)] if trace else []
        output.append(message_item(rid, answers[0]))
        created = int(time.time())
        return response_body(
            rid, chat, created=created, output=output, usage=usage, concilium=extension
        )
    if api == "completions":
        return text_completion_body(rid, chat, answers, usage, concilium=extension)
    choices = [wire.chat_choice(i, a) for i, a in enumerate(answers)]
    for choice, result in zip(choices, results, strict=True):
        choice["message"]["reasoning_content"] = _trace(result)  # read by Inspect, vLLM clients
    return wire.chat_completion(rid, chat.model, choices, usage, concilium=extension)


async def _answer_request(
    request: Request, workflows: Mapping[str, Workflow], max_body: int, api: API
) -> Response:
    """Answer one request: read and check the body, then run the workflow it names."""
    raw = await read_body(request, max_body)
    if raw is None:
        return too_large(max_body)
    try:
        chat = _PARSE[api](raw)
    except BadRequest as exc:
        return error(400, str(exc), "invalid_request_error")
    name = chat.model
    if name not in workflows:
        return error(
            404,
            f"no model {name[:100]!r}; models: {sorted(workflows)}",
            "invalid_request_error",
            "model_not_found",
        )
    workflow = workflows[name]
    rid = "-".join(filter(None, (_ID[api], uuid.uuid4().hex[:24])))
    _format_instruction(chat.messages, chat.response_format)
    if chat.stream:
        events = _stream_response if api == "responses" else _stream
        return StreamingResponse(events(workflow, chat, rid), media_type="text/event-stream")
    try:
        results = await _run_while_connected(request, workflow, chat)
        if results is None:
            log(f"{rid} ({name}): the client went away; its run was cancelled")
            return Response(status_code=499)
        return JSONResponse(_body(api, rid, chat, results))
    except Exception as exc:
        status, body = _failure(exc, rid, name)
        return JSONResponse(body, status_code=status)


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
        bind: the (host, port) the server listens on; a request's ``Host`` must name
            it (on 127.0.0.1 also ``localhost:PORT``, ``[::1]:PORT``); ``None``: any.
        max_body: the largest request body in bytes (413 beyond).

    Example:
        >>> app = create_app({}, bind=("127.0.0.1", 8080))
        >>> app.title
        'concilium'
    """
    app = FastAPI(title="concilium", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = allowed_hosts(*bind) if bind is not None else None
    app.add_middleware(RequestGuard, hosts=hosts, max_body=max_body)
    created = int(time.time())

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    def unauthorized() -> JSONResponse:
        return error(
            401,
            "missing or wrong API key; send Authorization: Bearer <key>",
            "authentication_error",
        )

    @app.exception_handler(HTTPException)
    async def httperror(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        return wire.model_list(
            wire.model_card(name, "concilium", created, description=wf.description)
            for name, wf in workflows.items()
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return await _answer_request(request, workflows, max_body, "chat")

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return await _answer_request(request, workflows, max_body, "responses")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return await _answer_request(request, workflows, max_body, "completions")

    return app
