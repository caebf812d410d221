"""The Responses API and the legacy completions API of ``concilium serve api``.

Neither has rules of its own: a request to ``/v1/responses`` or ``/v1/completions`` is
rewritten into the chat-completions request it means and read by
:func:`~concilium.serving._api_request.parse_request`, so every field is honoured or
refused exactly as on ``/v1/chat/completions``; a refusal names the field as the
client sent it (``max_output_tokens``, ``text.format``). Only what the chat API has
no word for is decided here (``previous_response_id``, ``echo``, ...). This module
also shapes the answers: a Responses body (a ``reasoning`` item whose summary is the
agents' turns and the vote, then the answer as a ``message``), its stream of typed
events, and a ``text_completion``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from concilium.agents import wire

from ._api_request import BadRequest, Chat, parse_request


def _invalid(exc: ValidationError, api: str) -> BadRequest:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "the body"
    if first["type"] == "json_invalid":
        return BadRequest(f"the request body is not JSON: {first['msg']}")
    if first["type"] == "extra_forbidden":
        return BadRequest(f"unknown field {where!r}: it is not part of the {api} API; remove it")
    return BadRequest(f"invalid request: {where}: {first['msg']}")


def _refuse(checks: dict[str, tuple[bool, str]]) -> None:
    """Raise for the first field whose check failed (``field: (ok, why)``)."""
    for field, (ok, why) in checks.items():
        if not ok:
            raise BadRequest(f"{field} is not supported: {why}")


def _parse_chat(body: dict[str, Any], renames: dict[str, str]) -> Chat:
    """Read ``body`` (a chat request) by the chat rules, naming fields in a refusal
    as the client's API calls them."""
    try:
        return parse_request(json.dumps({k: v for k, v in body.items() if v is not None}).encode())
    except BadRequest as exc:
        pattern = "|".join(re.escape(k) for k in sorted(renames, key=len, reverse=True))
        raise BadRequest(re.sub(rf"\b({pattern})\b", lambda m: renames[m[1]], str(exc))) from None


# ----------------------------------------------------------- the Responses API


class _Text(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class _Reasoning(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effort: str | None = None
    summary: str | None = None  # a summary is always given: the agents' turns and the vote
    generate_summary: str | None = None


class ResponsesRequest(BaseModel):
    """A ``POST /v1/responses`` body; see ``docs/serving.md`` for each field."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    text: _Text | None = None
    reasoning: _Reasoning | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # refused unless off, by the chat rules
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    # the Responses API's own, refused unless off
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    include: list[str] | None = None
    truncation: str | None = None
    prompt: Any = None
    max_tool_calls: int | None = None


_NO_STATE = "this server keeps no responses or conversations; send the whole conversation as input"
_RESPONSES_NAMES = {
    "max_tokens": "max_output_tokens",
    "response_format.json_schema.schema": "text.format.schema",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "verbosity": "text.verbosity",
    "messages": "input",
}
_TEXT_PARTS = ("input_text", "output_text", "text")
# fields that mean what the chat field of that name means
_AS_CHAT = {
    "model", "stream", "temperature", "user", "safety_identifier", "prompt_cache_key", "tools",
    "tool_choice", "parallel_tool_calls", "top_p", "top_logprobs", "store", "metadata",
    "service_tier",
}  # fmt: skip


def _messages(request: ResponsesRequest) -> list[dict[str, str]]:
    """``instructions`` and ``input`` as chat messages (text only)."""
    messages: list[dict[str, str]] = []
    if request.instructions is not None:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        return [*messages, {"role": "user", "content": request.input}]
    for i, item in enumerate(request.input):
        kind, role, content = item.get("type", "message"), item.get("role"), item.get("content")
        if kind != "message" or role not in ("system", "developer", "user", "assistant"):
            raise BadRequest(
                f"input[{i}] of type {str(kind)[:40]!r} is not supported: only messages "
                "(role and text content) are read; a workflow calls its own tools, and "
                "this server keeps no earlier responses to refer to"
            )
        if isinstance(content, list):
            parts: list[Any] = content
            other = sorted({str(p.get("type")) for p in parts if p.get("type") not in _TEXT_PARTS})
            if other or not all(isinstance(p.get("text"), str) for p in parts):
                raise BadRequest(f"input[{i}].content: only text parts are read; got {other}")
            content = " ".join(p["text"] for p in parts)
        if not isinstance(content, str):
            raise BadRequest(f"input[{i}].content must be text or a list of text parts")
        messages.append({"role": role, "content": content})
    return messages


def _chat_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format`` (its json_schema is nested there)."""
    if fmt is None or fmt.get("type") != "json_schema":
        return fmt
    inner = {k: v for k, v in fmt.items() if k != "type"}
    return {"type": "json_schema", "json_schema": inner}


def parse_responses(raw: bytes) -> Chat:
    """The chat a Responses request means, read by the chat rules.

    Raises:
        BadRequest: as ``parse_request`` does, with fields named as the Responses API
            names them, or for what only the Responses API asks for (stored state,
            background runs, tool items, extra output to include).

    Example:
        >>> chat = parse_responses(b'{"model": "m", "input": "2+2?", "instructions": "Be brief."}')
        >>> chat.messages
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2+2?'}]
    """
    try:
        request = ResponsesRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc, "Responses") from None
    options = request.stream_options or {}
    _refuse(
        {
            "previous_response_id": (request.previous_response_id is None, _NO_STATE),
            "conversation": (request.conversation is None, _NO_STATE),
            "background": (
                not request.background,
                "a run is answered on its request's connection; send it without background",
            ),
            "include": (
                not request.include,
                "the reasoning summary is always in output and there is nothing else to add",
            ),
            "truncation": (
                request.truncation in (None, "disabled"),
                "a workflow's agents see the whole input; shorten it instead",
            ),
            "prompt": (request.prompt is None, "this server has no stored prompts"),
            "max_tool_calls": (
                request.max_tool_calls is None,
                "a workflow's agents call their own tools, not the client's",
            ),
            "stream_options": (
                set(options) <= {"include_obfuscation"} and not options.get("include_obfuscation"),
                "only include_obfuscation=false is read (a loopback stream needs no padding)",
            ),
        }
    )
    text, reasoning = request.text or _Text(), request.reasoning or _Reasoning()
    body = {
        **request.model_dump(include=_AS_CHAT),
        "messages": _messages(request),
        "max_tokens": request.max_output_tokens,
        "response_format": _chat_format(text.format),
        "verbosity": text.verbosity,
        "reasoning_effort": reasoning.effort,
    }
    return _parse_chat(body, _RESPONSES_NAMES)


def reasoning_item(rid: str, trace: str) -> dict[str, Any]:
    """The agents' turns and the vote as a ``reasoning`` output item's summary."""
    summary = [{"type": "summary_text", "text": trace}] if trace else []
    return {"type": "reasoning", "id": f"rs_{rid}", "summary": summary}


def message_item(rid: str, text: str, status: str = "completed") -> dict[str, Any]:
    """The answer as a ``message`` output item."""
    parts = [_text_part(text)] if status == "completed" else []
    return {
        "type": "message",
        "id": f"msg_{rid}",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_body(
    rid: str,
    chat: Chat,
    *,
    created: int,
    output: list[dict[str, Any]],
    usage: wire.UsageBody | None = None,
    status: str = "completed",
    **extra: Any,
) -> dict[str, Any]:
    """A ``response`` object (``usage`` from a chat usage body)."""
    sampling = chat.sampling
    fmt = chat.response_format
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": status,
        "model": chat.model,
        "output": output,
        "usage": None if usage is None else _response_usage(usage),
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "temperature": sampling.temperature if sampling else None,
        "max_output_tokens": sampling.max_tokens if sampling else None,
        "text": {"format": {"type": "text"} if fmt is None else fmt.model_dump(by_alias=True)},
        **extra,
    }


def _response_usage(usage: wire.UsageBody) -> dict[str, Any]:
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


class ResponseEvents:
    """The typed server-sent events of a streamed response, numbered in order: the
    response created, the reasoning summary as it grows (one delta per agent turn),
    then the answer and the completed response (or an ``error`` event)."""

    def __init__(self, rid: str, chat: Chat) -> None:
        self.rid, self.chat, self.created = rid, chat, int(time.time())
        self.sequence = 0
        self.trace = ""
        self.reasoning_open = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    def _body(self, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return response_body(
            self.rid, self.chat, created=self.created, output=output, status=status, **extra
        )

    def start(self) -> bytes:
        body = self._body("in_progress", [])
        return self._event("response.created", response=body) + self._event(
            "response.in_progress", response=body
        )

    def reasoning(self, text: str) -> bytes:
        """One more piece of the reasoning summary (opens the item the first time)."""
        head = b""
        item_id = f"rs_{self.rid}"
        if not self.reasoning_open:
            self.reasoning_open = True
            head = self._event(
                "response.output_item.added", output_index=0, item=reasoning_item(self.rid, "")
            ) + self._event(
                "response.reasoning_summary_part.added",
                item_id=item_id,
                output_index=0,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        self.trace += text
        return head + self._event(
            "response.reasoning_summary_text.delta",
            item_id=item_id,
            output_index=0,
            summary_index=0,
            delta=text,
        )

    def finish(self, answer: str, usage: wire.UsageBody, **extra: Any) -> bytes:
        """Close the reasoning item, send the answer, then the completed response."""
        out = b""
        output: list[dict[str, Any]] = []
        if self.reasoning_open:
            item_id, part = f"rs_{self.rid}", {"type": "summary_text", "text": self.trace}
            where = {"item_id": item_id, "output_index": 0, "summary_index": 0}
            out += self._event("response.reasoning_summary_text.done", **where, text=self.trace)
            out += self._event("response.reasoning_summary_part.done", **where, part=part)
            output.append(reasoning_item(self.rid, self.trace))
            out += self._event("response.output_item.done", output_index=0, item=output[0])
        index = len(output)
        where = {"item_id": f"msg_{self.rid}", "output_index": index, "content_index": 0}
        out += self._event(
            "response.output_item.added",
            output_index=index,
            item=message_item(self.rid, "", "in_progress"),
        )
        out += self._event("response.content_part.added", **where, part=_text_part(""))
        out += self._event("response.output_text.delta", **where, delta=answer, logprobs=[])
        out += self._event("response.output_text.done", **where, text=answer, logprobs=[])
        out += self._event("response.content_part.done", **where, part=_text_part(answer))
        output.append(message_item(self.rid, answer))
        out += self._event("response.output_item.done", output_index=index, item=output[-1])
        body = self._body("completed", output, usage=usage, **extra)
        return out + self._event("response.completed", response=body)

    def error(self, body: wire.ErrorBody) -> bytes:
        """The failure as an ``error`` event, then the ``response.failed`` response
        (the stream's last event, as ``response.completed`` would have been)."""
        detail = body["error"]
        error = {"code": detail.get("code") or detail["type"], "message": detail["message"]}
        output = [reasoning_item(self.rid, self.trace)] if self.reasoning_open else []
        failed = self._body("failed", output, error=error)
        return self._event("error", **error, param=None) + self._event(
            "response.failed", response=failed
        )


# ------------------------------------------------------- the completions API


class CompletionRequest(BaseModel):
    """A ``POST /v1/completions`` body: one prompt string, answered by the workflow."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str | list[str]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    seed: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # refused unless off, by the chat rules (logprobs) or here
    logprobs: int | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


_COMPLETION_AS_CHAT = {
    "model", "n", "seed", "temperature", "max_tokens", "stop", "user", "top_p",
    "frequency_penalty", "presence_penalty", "logit_bias",
}  # fmt: skip


def parse_completion(raw: bytes) -> Chat:
    """The chat a completions request means: its one prompt as the user message.

    Raises:
        BadRequest: as ``parse_request`` does, and for more than one prompt, a
            stream (send it to ``/v1/chat/completions``), ``echo``, ``best_of`` or
            ``suffix``.

    Example:
        >>> parse_completion(b'{"model": "m", "prompt": "2+2?", "max_tokens": 5}').messages
        [{'role': 'user', 'content': '2+2?'}]
    """
    try:
        request = CompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc, "completions") from None
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    _refuse(
        {
            "a list of prompts": (
                len(prompts) == 1,
                f"send one prompt per request (got {len(prompts)}); use n for several answers",
            ),
            "stream": (
                not request.stream,
                "a workflow's answer comes at the end of its run; stream its agents' turns "
                "from /v1/chat/completions or /v1/responses",
            ),
            "echo": (not request.echo, "the answer is the workflow's, not a continuation"),
            "best_of": (
                request.best_of in (None, 1),
                "a workflow chooses its answer by its own pattern; use n for independent runs",
            ),
            "suffix": (request.suffix is None, "a workflow answers, it does not insert text"),
        }
    )
    body = {
        **request.model_dump(include=_COMPLETION_AS_CHAT),
        "messages": [{"role": "user", "content": prompts[0]}],
        "logprobs": bool(request.logprobs) or None,
    }
    return _parse_chat(body, {"messages": "prompt"})


def text_completion_body(
    rid: str, chat: Chat, answers: list[str], usage: wire.UsageBody, **extra: Any
) -> wire.JsonObject:
    """A ``text_completion`` body, one choice per run."""
    choices = [wire.text_choice(i, text) for i, text in enumerate(answers)]
    return wire.text_completion(rid, chat.model, choices, usage, **extra)
