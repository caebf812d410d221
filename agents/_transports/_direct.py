"""The direct transport: OpenAI-compatible chat completions over raw aiohttp.

It is chosen for OpenAI-compatible servers (vLLM, SGLang, llama.cpp, the simulated
server) because at the fan-outs concilium exists for, client CPU per call is the
whole cost: ~0.4 ms for raw aiohttp against ~3.5 ms through litellm. Both give the
same ``Completion`` (``completion_from_openai`` reads both).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import aiohttp

from concilium._errors import MalformedReplyError, ModelCallError

from .. import _wire
from .._model import ModelSpec
from .._redact import redact, scrub
from .._types import Completion, TokenLogprob, completion_from_openai, malformed_reply
from ._base import ABORTED, OnText, OnToken, retry_after_seconds, status_error
from ._deadline import FACTOR, Deadlines, Watch
from ._text import as_chat_chunk, as_chat_reply, is_text_request

DEADLINES = Deadlines()  # the pace of every replica, shared by the loops of the process
_NO_DEADLINE = contextlib.nullcontext()


class DirectTransport:
    """OpenAI-compatible chat completions over one aiohttp session per event loop.

    The connector has no total limit (``limit=0``): concurrency is bounded where it
    belongs, by each replica's ``max_concurrency`` in the model pool.

    Example:
        >>> DirectTransport.streams
        True
    """

    streams: ClassVar[bool] = True
    streams_tokens: ClassVar[bool] = True

    def __init__(self) -> None:
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]
        self._sessions = weakref.WeakKeyDictionary()
        self._last: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        last = self._last  # the session of the loop asked last: one check, not a lookup
        if last is not None and last[0] is loop and not last[1].closed:
            return last[1]
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=json.dumps,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[loop] = session
        self._last = (loop, session)
        return session

    async def aclose(self) -> None:
        """Close the session of the running loop (``run_sync`` and the CLI call this)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        session = self._sessions.pop(loop, None)
        if self._last is not None and self._last[0] is loop:
            self._last = None
        if session is not None and not session.closed:
            await session.close()

    async def stream(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText,
        on_token: OnToken | None = None,
    ) -> Completion:
        """One call streamed as server-sent events; each text delta goes to ``on_text``
        and, with ``on_token``, each token with its top-k logprobs (ask for them with
        ``logprobs``/``top_logprobs``) to ``on_token``, which aborts the request by
        returning ``True`` (``_base``)."""
        return await self.chat(spec, api_base, body, headers, on_text=on_text, on_token=on_token)

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText | None = None,
        on_token: OnToken | None = None,
    ) -> Completion:
        """One chat call. With ``on_text`` the reply is streamed (as ``stream`` does)."""
        if api_base is None:
            raise ModelCallError(
                "the direct transport needs an api_base; set ModelSpec(api_base=...) "
                "or use transport='litellm'",
                model=spec.model,
            )
        if on_text is not None:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        payload = json.dumps({"model": spec.served_name, **body}).encode()
        request_headers = {"Content-Type": "application/json", **headers}
        if spec.api_key:
            request_headers["Authorization"] = f"Bearer {spec.api_key}"
        text = is_text_request(body)
        url = f"{api_base}/completions" if text else f"{api_base}/chat/completions"
        # a whole reply's first byte is its last: a deadline learned from the replica's
        # replies, scaled to this one, is what gives up a hung request (``_deadline``)
        watch = None if on_text is not None else DEADLINES.watch(
            (api_base, spec.served_name), body.get("max_tokens"), spec.timeout
        )  # fmt: skip
        replied: float | None = None
        missed = False
        total = spec.timeout if watch is None or watch.seconds is None else watch.seconds
        try:  # timeouts first: aiohttp's are also ClientConnectionErrors
            async with _NO_DEADLINE if watch is None or watch.timer is None else watch.timer:
                async with self.session().post(
                    url,
                    data=payload,
                    headers=request_headers,
                    # a stream: its first event, then each next one
                    timeout=_timeout(
                        total,
                        spec.connect_timeout,
                        spec.ttft_timeout if on_text is not None else None,
                    ),
                ) as resp:
                    if resp.status >= 400:
                        head = await _read_head(resp)
                        wait = retry_after_seconds(resp.headers.get("Retry-After"))
                        raise status_error(
                            spec, api_base, resp.status, head.decode(errors="replace"), wait
                        )
                    if on_text is not None:
                        return await _read_stream(spec, resp, on_text, api_base, on_token)
                    raw = await _read_body(spec, resp, api_base)
                    if watch is not None:
                        replied = watch.loop.time() - watch.started
        except TimeoutError as exc:
            if watch is not None and _missed(watch, exc, spec.timeout):
                missed = True
                raise deadline_error(spec, api_base, watch) from exc
            raise timeout_error(spec, api_base, exc) from exc
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,  # a bad status line or headers: not HTTP
        ) as exc:
            raise ModelCallError(
                f"connection failed ({type(exc).__name__}: {scrub(str(exc))}); "
                "is the server running?",
                model=spec.model,
                retryable=True,
                connection_failed=True,
                api_base=redact(api_base),
            ) from exc
        finally:
            if watch is not None:
                DEADLINES.done(watch, replied, missed=missed)
        return _completion(spec, api_base, resp.status, raw, text=text)


def _missed(watch: Watch, exc: TimeoutError, timeout: float) -> bool:
    """Whether ``exc`` is ``watch``'s deadline: its own timer (sent before the
    replica's first reply), or the whole-request timeout it set shorter than
    ``timeout`` (not a connect or read timeout)."""
    if watch.timer is not None:
        return watch.timer.expired()
    return watch.seconds is not None and watch.seconds < timeout and not isinstance(
        exc, (aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError)
    )  # fmt: skip


@functools.lru_cache(maxsize=512)
def _timeout(total: float, connect: float, read: float | None) -> aiohttp.ClientTimeout:
    """One ``ClientTimeout`` per setting (a frozen value), not one built per request."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)


def deadline_error(spec: ModelSpec, api_base: str, watch: Watch) -> ModelCallError:
    """The error for a whole request abandoned at its deadline (``_deadline``): a
    retryable timeout, which the ledger retries at once, elsewhere when it can."""
    return ModelCallError(
        f"no whole answer within {watch.seconds:.3g} s, this request's deadline "
        f"({FACTOR:g}x the replica's recent replies, scaled to max_tokens="
        f"{watch.max_tokens} and to the load; timeout={spec.timeout:g} s caps it): "
        "abandoned as hung, and the next request gets twice as long",
        model=spec.model,
        retryable=True,
        api_base=redact(api_base),
    )


def timeout_error(spec: ModelSpec, api_base: str, exc: TimeoutError) -> ModelCallError:
    """The error for a request that ran out of time, naming the timeout that fired.
    A connect timeout is a failed connection (nothing was generated: another
    replica may take the call); a read timeout means the server went quiet.

    Example:
        >>> spec = ModelSpec("hosted_vllm/m", ttft_timeout=2)
        >>> err = timeout_error(spec, "http://h/v1", aiohttp.SocketTimeoutError())
        >>> err.retryable, "ttft_timeout" in str(err)
        (True, True)
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        what, failed = f"no connection within {spec.connect_timeout:g} s (connect_timeout)", True
    elif isinstance(exc, aiohttp.SocketTimeoutError):
        what, failed = (
            f"the stream sent nothing for {spec.ttft_timeout:g} s (ttft_timeout): the "
            "server may be hung or overloaded",
            False,
        )
    else:
        what, failed = f"no whole answer within {spec.timeout:g} s (timeout)", False
    return ModelCallError(
        f"{what}; or check the server's load",
        model=spec.model,
        retryable=True,
        connection_failed=failed,
        api_base=redact(api_base),
    )


SSE_LINE_CAP = 4 * 2**20  # one streamed event; OpenAI servers send a few hundred bytes
_HEAD = 4096  # what is read of an error body (status_error shows 300 characters)
_CHUNK = 2**16
# a JSON escape of a UTF-16 surrogate: only then can a body hold a lone one
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _too_large(spec: ModelSpec, api_base: str, status: int, what: str) -> MalformedReplyError:
    limit = spec.max_response_bytes
    return MalformedReplyError(
        f"{what} is over {limit:,} bytes; if the reply is meant to be this large, "
        f"raise ModelSpec(max_response_bytes=...)",
        model=spec.model,
        status=status,
        api_base=redact(api_base),
    )


async def _read_head(resp: aiohttp.ClientResponse) -> bytes:
    """The start of an error body; the rest is never read (the connection is dropped)."""
    head = b""
    async for chunk in resp.content.iter_chunked(_HEAD):
        head += chunk
        if len(head) >= _HEAD:
            break
    return head[:_HEAD]


async def _read_body(spec: ModelSpec, resp: aiohttp.ClientResponse, api_base: str) -> bytes:
    """The whole body, refused past ``spec.max_response_bytes`` of decompressed bytes
    (aiohttp decompresses as it reads, so a gzip bomb is stopped at the cap)."""
    limit = spec.max_response_bytes
    headers = resp.headers
    declared = headers.get("Content-Length")
    length = int(declared) if declared is not None and declared.isdigit() else None
    if length is not None and length > limit:
        raise _too_large(spec, api_base, resp.status, f"the reply ({length:,} bytes)")
    if length is not None and "Content-Encoding" not in headers:
        # not compressed: the body is Content-Length bytes, which fit, and aiohttp reads
        # no more than that; read at once (the chunk loop cost ~3 us a call)
        return await resp.read()
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(spec, api_base, resp.status, "the reply")
        parts.append(chunk)
    return b"".join(parts)


def _completion(
    spec: ModelSpec, api_base: str, status: int, raw: bytes, *, text: bool = True
) -> Completion:
    """A checked ``Completion`` from a body, or ``MalformedReplyError`` saying what is
    wrong; ``text``: the request went to ``/completions`` (its reply is converted)."""
    try:
        data = json.loads(raw)
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(data, ensure_ascii=False).encode()  # a lone surrogate fails here
    except UnicodeEncodeError:
        raise malformed_reply(
            "the reply holds a lone UTF-16 surrogate (not valid text)",
            api_base, model=spec.model, status=status,
        ) from None  # fmt: skip
    except (ValueError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise malformed_reply(
            f"the reply is {problem}: {scrub(repr(raw[:200]))}",
            api_base, model=spec.model, status=status,
        ) from None  # fmt: skip
    if text:
        data = as_chat_reply(data)
    return completion_from_openai(data, replica=api_base, model=spec.model, status=status)


async def _sse_lines(
    spec: ModelSpec, resp: aiohttp.ClientResponse, api_base: str
) -> AsyncIterator[bytes]:
    """The stream's lines, split here rather than by aiohttp (whose reader fails on a
    line over 64 KiB): each line up to ``SSE_LINE_CAP``, the whole stream up to
    ``spec.max_response_bytes``."""
    total_limit = spec.max_response_bytes
    line_limit = min(SSE_LINE_CAP, total_limit)
    buffer = bytearray()
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > total_limit:
            raise _too_large(spec, api_base, resp.status, "the stream")
        start = 0
        end = chunk.find(b"\n")
        while end >= 0:
            if buffer:
                buffer += chunk[start:end]
                line = bytes(buffer)
                buffer.clear()
            else:
                line = chunk[start:end]
            if len(line) > line_limit:
                raise _too_large(spec, api_base, resp.status, "a streamed line")
            yield line
            start = end + 1
            end = chunk.find(b"\n", start)
        buffer += chunk[start:]
        if len(buffer) > line_limit:
            raise _too_large(spec, api_base, resp.status, "a streamed line")
    if buffer:
        yield bytes(buffer)


async def _read_stream(
    spec: ModelSpec,
    resp: aiohttp.ClientResponse,
    on_text: OnText,
    api_base: str,
    on_token: OnToken | None = None,
) -> Completion:
    """Assemble a one-choice completion from an OpenAI event stream, passing on deltas
    (and the streamed logprobs, kept on the choice, token by token to ``on_token``).

    Every event is checked (``_wire.check_chunk``); the first malformed one ends the
    call with ``MalformedReplyError``. When ``on_token`` returns ``True`` the
    connection is closed at once, so the server aborts the request, and the reply is
    what came so far, ``finish_reason`` ``"abort"``; the server's usage never comes
    then, so its completion tokens are the tokens received."""
    parts: list[str] = []
    tokens: list[TokenLogprob] = []
    last = _wire.ChunkReply()
    finish = None
    usage: _wire.UsageReply | None = None
    async for raw_line in _sse_lines(spec, resp, api_base):
        line = raw_line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            chunk = _wire.check_chunk(as_chat_chunk(json.loads(data)))
        except (ValueError, RecursionError) as exc:
            problem = str(exc) if isinstance(exc, _wire.ReplyShapeError) else (
                f"a streamed event is not JSON: {scrub(repr(data[:200]))}"
            )  # fmt: skip
            raise malformed_reply(problem, api_base, model=spec.model, status=resp.status) from None
        last = chunk
        usage = chunk.usage or usage
        for choice in chunk.choices or ():
            delta = choice.delta.content if choice.delta is not None else None
            if delta:
                parts.append(delta)
                on_text(delta)
            finish = choice.finish_reason or finish
            if choice.logprobs is not None and _take_tokens(choice.logprobs, tokens, on_token):
                finish = ABORTED
                resp.close()  # the connection, not just the response: vLLM aborts on it
                break
        if finish == ABORTED:
            break
    if finish is None and not parts:
        raise malformed_reply(
            "the stream ended without a choice (no text and no finish reason)",
            api_base, model=spec.model, status=resp.status,
        )  # fmt: skip
    logprobs: _wire.LogprobsBody | None = None
    if tokens:
        logprobs = {"content": [_wire.token_logprob(t.token, t.logprob, t.top) for t in tokens]}
    choice = _wire.chat_choice(0, "".join(parts), finish, logprobs=logprobs)
    counts = usage or _wire.UsageReply()
    generated = max(counts.completion_tokens or 0, len(tokens))  # an abort has no usage event
    body = _wire.chat_completion(last.id or "", last.model or "", [choice],
                                 _wire.usage(counts.prompt_tokens or 0, generated), created=0)  # fmt: skip
    return completion_from_openai(body, replica=api_base, model=spec.model, status=resp.status)


def _take_tokens(
    logprobs: _wire.LogprobsReply, into: list[TokenLogprob], on_token: OnToken | None
) -> bool:
    """Keep an event's tokens, each passed to ``on_token``; whether it said abort."""
    for t in logprobs.content or ():
        token = TokenLogprob(
            t.token, t.logprob, tuple((a.token, a.logprob) for a in t.top_logprobs or ())
        )
        into.append(token)
        if on_token is not None and on_token(token):
            return True
    return False
