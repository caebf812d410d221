"""A hostile or broken server: every bad reply is a typed, readable error, never a
traceback; replies past the size cap are refused with bounded memory; a model's
escape sequences never reach the terminal raw.

The server runs on loopback in a thread of its own (so a CLI run in this process and
a client in a subprocess can reach it too); each case is a path of its own:
``http://127.0.0.1:PORT/<case>/v1``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from concilium import ModelCallError
from concilium._errors import MalformedReplyError
from concilium.agents import Agent, ModelSpec, wire
from concilium.agents._ledger import RetryPolicy
from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
from concilium.cli import main

MiB = 2**20
ANSI = "\x1b[2J\x1b[31mpwned\x1b]0;title\x07"


def _reply(content: object = "ok", **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "r",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    body.update(fields)
    return body


def _json(
    value: object, status: int = 200
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=json.dumps(value).encode(), status=status, content_type="application/json"
        )

    return handler


def _raw(body: bytes, status: int = 200) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type="application/json")

    return handler


# What each case sends, and what the error must say.
MALFORMED: dict[str, tuple[Callable[[web.Request], Awaitable[web.StreamResponse]], str]] = {
    "list": (_json([1, 2]), "not a JSON object but a list"),
    "null": (_json(None), "not a JSON object but null"),
    "choices-string": (_json(_reply(choices="x")), "choices: input should be a valid list"),
    "choices-empty": (_json(_reply(choices=[])), "choices: empty"),
    "choice-not-object": (_json(_reply(choices=[7])), "choices[0]"),
    "no-message": (_json(_reply(choices=[{"index": 0}])), "choices[0].message: field required"),
    "content-number": (_json(_reply(content=42)), "choices[0].message.content"),
    "content-list": (_json(_reply(content=["a"])), "choices[0].message.content"),
    "usage-negative": (
        _json(_reply(usage={"prompt_tokens": -1000, "completion_tokens": 1})),
        "usage.prompt_tokens: input should be greater than or equal to 0",
    ),
    "usage-string": (
        _json(_reply(usage={"prompt_tokens": "7", "completion_tokens": 1})),
        "usage.prompt_tokens",
    ),
    "usage-float": (
        _json(_reply(usage={"prompt_tokens": 1, "completion_tokens": 2.5})),
        "usage.completion_tokens",
    ),
    "usage-list": (_json(_reply(usage=[1, 2])), "usage"),
    "not-json": (_raw(b"<html>oops</html>"), "the reply is not JSON"),
    "invalid-utf8": (_raw(b'{"choices": "\xff\xfe"}'), "the reply is not JSON"),
    "deep": (_raw(b"[" * 200_000 + b"]" * 200_000), "nested too deeply"),
    "surrogate": (
        _raw(b'{"choices": [{"message": {"content": "a\\ud800b"}}]}'),
        "lone UTF-16 surrogate",
    ),
    "surrogate-elsewhere": (
        _raw(b'{"choices": [{"message": {"content": "a"}}], "extra": "\\udfff"}'),
        "lone UTF-16 surrogate",
    ),
    "empty-body": (_raw(b""), "the reply is not JSON"),
}


async def _stream_events(request: web.Request, lines: list[bytes]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for line in lines:
        await resp.write(line)
    await resp.write_eof()
    return resp


def _sse(*lines: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _stream_events(request, list(lines))

    return handler


def _delta(text: object) -> bytes:
    return wire.sse(wire.chunk("r", "m", [wire.delta_choice(0, {"content": text})], created=0))


LONG_TEXT = "x" * (100 * 1024)  # one event of 100 KiB: past aiohttp's 64 KiB line limit
DONE = wire.sse(
    wire.chunk("r", "m", [wire.delta_choice(0, {}, "stop")], created=0, usage=wire.usage(2, 3))
)

STREAMS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "sse-long-line": _sse(_delta(LONG_TEXT), DONE, wire.SSE_DONE),
    "sse-ansi": _sse(_delta(ANSI), DONE, wire.SSE_DONE),
}
MALFORMED_STREAMS: dict[str, tuple[Callable[[web.Request], Awaitable[web.StreamResponse]], str]] = {
    "sse-too-long-line": (_sse(b"data: " + b"x" * (5 * MiB) + b"\n\n"), "a streamed line is over"),
    "sse-not-json": (_sse(b"data: {nope\n\n"), "a streamed event is not JSON"),
    "sse-list": (_sse(b"data: [1]\n\n"), "a streamed event is not a JSON object but a list"),
    "sse-content-number": (_sse(_delta(5)), "choices[0].delta.content"),
    "sse-negative-usage": (
        _sse(b'data: {"choices": [], "usage": {"prompt_tokens": -5}}\n\n'),
        "usage.prompt_tokens: input should be greater than or equal to 0",
    ),
    "sse-surrogate": (
        _sse(b'data: {"choices": [{"delta": {"content": "\\udc00"}}]}\n\n'),
        "choices[0].delta.content: not valid text (surrogates not allowed",
    ),
    "sse-nothing": (_sse(wire.SSE_DONE), "the stream ended without a choice"),
}


class Sent:
    """Bytes the streaming handlers managed to write (the client stops reading)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}


def _huge(sent: Sent) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """300 MB of body, generated as it is sent (chunked: no Content-Length to refuse on)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b" " * MiB
        sent.bytes["huge"] = 0
        try:
            for _ in range(300):
                await resp.write(block)
                sent.bytes["huge"] += len(block)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what it should do
        return resp

    return handler


def _gzip_bomb(sent: Sent) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A gzip body that inflates to 2.3 GB: one 64 MiB block of spaces compressed once
    (about 64 KiB) and sent 36 times (a full flush makes each copy self-contained)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = compressor.compress(b" " * 64 * MiB) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(b" " * 64 * MiB) + compressor.flush(zlib.Z_FULL_FLUSH)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
        await resp.prepare(request)
        sent.bytes["gzip"] = 0
        try:
            await resp.write(head)
            for _ in range(35):
                await resp.write(block)
                sent.bytes["gzip"] += len(block)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    return handler


async def _bad_status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 abc NOT-HTTP\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
    finally:
        writer.close()


class HostileServer:
    """The aiohttp app (one path per case) and a raw socket server, in one thread."""

    def __init__(self) -> None:
        self.sent = Sent()
        self.url = ""
        self.raw_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    def __enter__(self) -> HostileServer:
        self._thread.start()
        assert self._ready.wait(30), "the hostile server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()

    def base(self, case: str) -> str:
        return f"{self.url}/{case}/v1"

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        handlers = {
            **{case: handler for case, (handler, _) in MALFORMED.items()},
            **{case: handler for case, (handler, _) in MALFORMED_STREAMS.items()},
            **STREAMS,
            "ansi": _json(_reply(f"The answer is \\boxed{{42}} {ANSI}")),
            "malformed-503": _raw(b"<html>upstream down</html>", status=503),
            "error-ansi": _raw(f"bad request {ANSI}".encode(), status=400),
            "huge": _huge(self.sent),
            "gzip": _gzip_bomb(self.sent),
        }
        for case, handler in handlers.items():
            app.router.add_post(f"/{case}/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        raw = await asyncio.start_server(_bad_status_line, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.raw_url = f"http://127.0.0.1:{raw.sockets[0].getsockname()[1]}/v1"
        self._ready.set()
        await self._stop.wait()
        raw.close()
        await runner.cleanup()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


async def _ask(api_base: str, *, stream: bool = False, max_response_bytes: int = 16 * MiB) -> str:
    """One agent call with no retries; the reply's text."""
    token = use_ledger(CallLedger(retry=RetryPolicy(attempts=1)))
    try:
        spec = ModelSpec("hosted_vllm/m", api_base=api_base, max_response_bytes=max_response_bytes)
        agent = Agent("a", spec)
        if stream:
            parts: list[str] = []
            reply = await agent.run("q", on_text=parts.append)
            assert "".join(parts) == reply.text
            return reply.text
        return (await agent.run("q")).text
    finally:
        reset_ledger(token)


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_reply_is_a_typed_error_naming_the_server(
    hostile: HostileServer, case: str
) -> None:
    expected = MALFORMED[case][1]
    with pytest.raises(MalformedReplyError) as info:
        await _ask(hostile.base(case))
    message = str(info.value)
    assert expected in message, message
    assert f"at {hostile.base(case)}" in message and info.value.status == 200
    assert info.value.retryable is False and info.value.model == "hosted_vllm/m"
    assert len(message) < 600  # the reply is quoted, not dumped


@pytest.mark.parametrize("case", sorted(MALFORMED_STREAMS))
async def test_a_malformed_stream_is_a_typed_error(hostile: HostileServer, case: str) -> None:
    with pytest.raises(MalformedReplyError, match=re.escape(MALFORMED_STREAMS[case][1])) as info:
        await _ask(hostile.base(case), stream=True)
    assert info.value.retryable is False


async def test_an_sse_line_over_64_kib_within_the_cap_is_read_whole(hostile: HostileServer) -> None:
    assert await _ask(hostile.base("sse-long-line"), stream=True) == LONG_TEXT


async def test_a_malformed_reply_with_a_5xx_status_is_retryable(hostile: HostileServer) -> None:
    with pytest.raises(ModelCallError) as info:
        await _ask(hostile.base("malformed-503"))
    assert info.value.status == 503 and info.value.retryable


async def test_a_bad_status_line_is_a_retryable_connection_error(hostile: HostileServer) -> None:
    with pytest.raises(ModelCallError, match="connection failed") as info:
        await _ask(hostile.raw_url)
    assert info.value.retryable and info.value.connection_failed
    assert not isinstance(info.value, MalformedReplyError)


async def test_a_reply_over_the_cap_is_refused_and_the_cap_is_per_model(
    hostile: HostileServer,
) -> None:
    with pytest.raises(MalformedReplyError, match=r"over 16,777,216 bytes.*max_response_bytes"):
        await _ask(hostile.base("huge"))
    with pytest.raises(MalformedReplyError, match="over 65,536 bytes"):
        await _ask(hostile.base("sse-long-line"), stream=True, max_response_bytes=64 * 1024)
    assert "42" in await _ask(hostile.base("ansi"), max_response_bytes=1024)


async def test_control_characters_in_error_bodies_are_escaped(hostile: HostileServer) -> None:
    with pytest.raises(ModelCallError) as info:
        await _ask(hostile.base("error-ansi"))
    assert "\x1b" not in str(info.value) and "\\x1b[2J" in str(info.value)


_CLIENT = """
import asyncio, resource, sys
from concilium._errors import MalformedReplyError
from concilium.agents import Agent, ModelSpec, aclose
from concilium.agents.ledger import CallLedger, use_ledger
from concilium.agents._ledger import RetryPolicy

async def main():
    use_ledger(CallLedger(retry=RetryPolicy(attempts=1)))
    agent = Agent("a", ModelSpec("hosted_vllm/m", api_base=sys.argv[1]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        await agent.run("q")
    except MalformedReplyError as exc:
        print(exc)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)  # KiB
    await aclose()

asyncio.run(main())
"""


# Without the cap the same client grew by 0.55 GB (huge) and 6.4 GB (gzip) here.
@pytest.mark.parametrize("case", ["huge", "gzip"])
def test_a_huge_body_or_a_gzip_bomb_is_refused_with_bounded_memory(
    hostile: HostileServer, case: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-P", "-c", _CLIENT, hostile.base(case)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    message, growth_kib = out.stdout.strip().rsplit("\n", 1)
    assert "is over 16,777,216 bytes" in message
    assert int(growth_kib) < 150 * 1024, f"the client grew by {int(growth_kib) // 1024} MiB"
    if case == "huge":  # the client hung up long before the 300 MB were sent
        assert hostile.sent.bytes["huge"] < 100 * MiB


def _workflow(tmp_path: Path, api_base: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: one\n"
        "models:\n"
        f"  m: {{model: hosted_vllm/m, api_base: '{api_base}'}}\n"
        "agents:\n"
        "  solver: {model: m, max_tokens: 16}\n"
        "workflow: {kind: self_consistency, agent: solver, samples: 1, answer: boxed}\n"
    )
    return path


def test_the_cli_shows_a_malformed_reply_as_a_message_without_traceback(
    hostile: HostileServer, tmp_path: Path
) -> None:
    wf = _workflow(tmp_path, hostile.base("choices-empty"))
    result = CliRunner().invoke(main, ["run", str(wf), "-i", "q"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "choices: empty (the server returned no answer)" in result.output
    assert f"at {hostile.base('choices-empty')}" in result.output


def test_the_cli_escapes_a_models_control_characters(
    hostile: HostileServer, tmp_path: Path
) -> None:
    wf = _workflow(tmp_path, hostile.base("ansi"))
    result = CliRunner().invoke(main, ["run", str(wf), "-i", "q"])
    assert result.exit_code == 0, result.output
    assert "answer: 42" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J\\x1b[31mpwned\\x1b]0;title\\x07" in result.output


async def test_a_models_control_characters_survive_in_the_text_itself(
    hostile: HostileServer,
) -> None:
    # only what is printed is escaped; the reply keeps what the model said
    assert ANSI in await _ask(hostile.base("sse-ansi"), stream=True)
