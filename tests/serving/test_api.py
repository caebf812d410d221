"""``concilium serve api`` as a user runs it (a subprocess), called with the official
``openai`` client and raw HTTP: answers, streamed rounds, API keys, concurrency,
errors, and what it refuses (malformed and oversized bodies, foreign Host and Origin
headers), cancels (a run whose client left) and hides (backend addresses, keys)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from concilium.agents.sim import Faults, Latency, SimConfig
from concilium.serving import ManagedProcess, SimServer

ROOT = Path(__file__).resolve().parents[2]
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 12 * 7?"}]
PASSWORD = "PASSw0rd9"


def url(proc: ManagedProcess) -> str:
    """The server's /v1 URL (known once it has started)."""
    assert proc.url is not None
    return proc.url


async def start(*args: str, backend: str = "sim") -> ManagedProcess:
    argv = [
        sys.executable,
        "-P",
        "-m",
        "concilium",
        "serve",
        "api",
        *args,
        "--backend",
        backend,
        "--port",
        "0",
    ]
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=60)  # fmt: skip
    return await proc.start()


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ManagedProcess]:
    proc = await start("examples/debate.yaml", "examples/self_consistency.yaml")
    yield proc
    await proc.stop()


async def test_the_openai_client_gets_a_debates_answer_and_its_votes(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=url(api), api_key="unused")
    assert sorted(m.id for m in (await client.models.list()).data) == ["debate", "self_consistency"]
    reply = await client.chat.completions.create(model="debate", messages=QUESTION)
    extension = (reply.model_extra or {})["concilium"]
    assert reply.choices[0].message.content == extension["answer"] == extension["votes"]["winner"]
    assert extension["calls"] == 6 and len(extension["transcript"]) == 6
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


async def test_streaming_sends_each_rounds_turns_then_the_answer(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=url(api), api_key="unused")
    reasoning: list[str] = []
    content: list[str] = []
    finish = None
    async for chunk in await client.chat.completions.create(
        model="debate", messages=QUESTION, stream=True
    ):
        delta = chunk.choices[0].delta
        thought = (delta.model_extra or {}).get("reasoning_content")
        if thought:
            assert not content, "reasoning after the answer"
            reasoning.append(thought)
        if delta.content:
            content.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    assert [r.split("]")[0] for r in reasoning] == [
        *(f"[round {r} {a}" for r in (1, 2) for a in ("alice", "bob", "carol")),
        "[votes",  # the final vote, last
    ]
    assert len(content) == 1 and finish == "stop"


async def test_32_concurrent_requests_all_succeed(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=url(api), api_key="unused", max_retries=0)
    replies = await asyncio.gather(*(client.chat.completions.create(model="self_consistency", messages=QUESTION)
                                     for _ in range(32)))  # fmt: skip
    assert len(replies) == 32 and all(
        (r.model_extra or {})["concilium"]["calls"] == 1 for r in replies
    )
    assert len({r.id for r in replies}) == 32


async def test_unknown_model_and_bad_requests_get_openai_style_errors(api: ManagedProcess) -> None:
    client = openai.AsyncOpenAI(base_url=url(api), api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no model 'debait'"):
        await client.chat.completions.create(model="debait", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="at least one user message"):
        await client.chat.completions.create(
            model="debate", messages=[{"role": "system", "content": "hi"}]
        )


async def test_with_an_api_key_a_request_without_it_gets_401() -> None:
    proc = await start("examples/debate.yaml", "--api-key", "s3cret")
    try:
        with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
            await openai.AsyncOpenAI(
                base_url=url(proc), api_key="wrong", max_retries=0
            ).models.list()
        models = await openai.AsyncOpenAI(base_url=url(proc), api_key="s3cret").models.list()
        assert [m.id for m in models.data] == ["debate"]
    finally:
        await proc.stop()


def test_binding_beyond_loopback_without_a_key_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml", "--host", "0.0.0.0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in out.stderr


def test_a_short_or_blank_key_beyond_loopback_is_refused_with_the_fix() -> None:
    for key in ("short-key", "   "):
        out = subprocess.run(
            [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml",
             "--host", "0.0.0.0", "--api-key", key],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert "--api-key is" in out.stderr and "secrets.token_urlsafe" in out.stderr


# ------------------------------------------------------------ malformed requests

Q = QUESTION
MALFORMED: dict[str, bytes] = {
    "not JSON": b"what is 12 * 7?",
    "empty": b"",
    "not UTF-8": b"\xff\xfe{",
    "a list": b"[1, 2]",
    "model as a list": json.dumps({"model": ["debate"], "messages": Q}).encode(),
    "no model": json.dumps({"messages": Q}).encode(),
    "messages a string": json.dumps({"model": "debate", "messages": "hi"}).encode(),
    "no messages": json.dumps({"model": "debate"}).encode(),
    "empty messages": json.dumps({"model": "debate", "messages": []}).encode(),
    "a non-object message": json.dumps({"model": "debate", "messages": ["hi"]}).encode(),
    "unknown role": json.dumps({"model": "debate", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
    "user without content": json.dumps({"model": "debate", "messages": [{"role": "user"}]}).encode(),
    "null content": json.dumps({"model": "debate", "messages": [{"role": "user", "content": None}]}).encode(),
    "number content": json.dumps({"model": "debate", "messages": [{"role": "user", "content": 5}]}).encode(),
    "image part": json.dumps({"model": "debate", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}).encode(),
    "stream a string": json.dumps({"model": "debate", "messages": Q, "stream": "yes"}).encode(),
    "very deep": b'{"model": "debate", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}  # fmt: skip


async def test_every_malformed_body_gets_an_openai_style_400(api: ManagedProcess) -> None:
    async with httpx.AsyncClient(base_url=url(api), timeout=30) as client:
        for name, body in MALFORMED.items():
            reply = await client.post(
                "/chat/completions", content=body, headers={"Content-Type": "application/json"}
            )
            assert reply.status_code == 400, (name, reply.text)
            error = reply.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], name
        reply = await client.post(
            "/chat/completions", json={"model": "debate", "messages": [{"role": "user"}]}
        )
        assert "messages[0]: a user message needs content" in reply.json()["error"]["message"]
        reply = await client.get("/no/such/route")
        assert reply.status_code == 404 and reply.json()["error"]["type"] == "not_found_error"
    assert await health(api), "the server survived them all"


async def health(api: ManagedProcess) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url(api).removesuffix("/v1") + "/health")).status_code == 200


async def test_a_declared_oversized_body_gets_413_without_being_sent(api: ManagedProcess) -> None:
    host, port = url(api).split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
        + b'{"model": "debate", "messages": ['
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)  # not 50 MB later
    assert head.startswith(b"HTTP/1.1 413")
    writer.close()


async def test_an_oversized_body_without_a_length_gets_413(api: ManagedProcess) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "debate", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 32 * 1024  # 1.25 MiB in all, past the 1 MiB limit
        yield b'"}]}'

    async with httpx.AsyncClient(base_url=url(api), timeout=30) as client:
        reply = await client.post("/chat/completions", content=chunks())
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "body_too_large"


async def test_a_foreign_host_or_a_cross_site_origin_is_refused(api: ManagedProcess) -> None:
    port = url(api).split(":")[2].split("/")[0]
    async with httpx.AsyncClient(base_url=url(api), timeout=30) as client:
        rebound = await client.get("/models", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "host_not_allowed"
        cross = await client.post("/chat/completions", json={"model": "debate", "messages": Q},
                                  headers={"Origin": "http://evil.example"})  # fmt: skip
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "origin_not_allowed"
        for name in (f"localhost:{port}", f"127.0.0.1:{port}"):
            same = await client.get("/models", headers={"Host": name, "Origin": f"http://{name}"})
            assert same.status_code == 200, name


async def test_content_parts_are_read_as_text(sim: SimServer) -> None:
    proc = await start("examples/self_consistency.yaml", backend=sim.url)
    try:
        client = openai.AsyncOpenAI(base_url=url(proc), api_key="unused", max_retries=0)
        parts: Any = [{"type": "text", "text": "What is"}, {"type": "text", "text": "12 * 7?"}]
        await client.chat.completions.create(
            model="self_consistency", messages=[{"role": "user", "content": parts}]
        )
        (request,) = await sim.requests()
        sent = json.dumps(request["body"]["messages"])
        assert "What is 12 * 7?" in sent and "'type'" not in sent
    finally:
        await proc.stop()


# ------------------------------------------------------------ runs that end early


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def read_stream(proc: ManagedProcess) -> None:
    """A streamed request read until the server is cancelled under it."""
    body = {"model": "self_consistency", "messages": Q, "stream": True}
    async with httpx.AsyncClient(timeout=300) as client:
        async with client.stream("POST", url(proc) + "/chat/completions", json=body) as reply:
            async for _ in reply.aiter_lines():
                pass


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_client_that_leaves_cancels_its_run(streamed: bool) -> None:
    async with SimServer(SimConfig(latency=Latency(fixed=120))) as slow:
        proc = await start("examples/self_consistency.yaml", backend=slow.url)
        try:
            client = openai.AsyncOpenAI(base_url=url(proc), api_key="unused", max_retries=0)
            request = asyncio.ensure_future(
                read_stream(proc)
                if streamed
                else client.chat.completions.create(model="self_consistency", messages=Q)
            )

            async def in_flight() -> bool:
                return (await slow.stats())["in_flight"] == 1

            async def cancelled() -> bool:
                stats = await slow.stats()
                return stats["cancelled"] == 1 and stats["in_flight"] == 0

            await until(in_flight)
            request.cancel()  # the client goes: its connection closes
            await until(cancelled)
            assert (await slow.stats())["completed"] == 0
            await client.close()
        finally:
            await proc.stop()
        if not streamed:
            assert any("the client went away" in line for line in proc.lines)


@pytest_asyncio.fixture
async def failing() -> AsyncIterator[tuple[SimServer, ManagedProcess]]:
    """serve api over a server whose every reply is a 400, reached through an
    api_base that carries a password."""
    async with SimServer(SimConfig(faults=Faults(error_rate=1.0, error_status=400))) as sim:
        backend = sim.url.replace("http://", f"http://user:{PASSWORD}@")
        proc = await start("examples/self_consistency.yaml", backend=backend)
        yield sim, proc
        await proc.stop()


async def test_a_failed_run_gets_a_generic_error_and_the_log_no_password(
    failing: tuple[SimServer, ManagedProcess],
) -> None:
    sim, proc = failing
    client = openai.AsyncOpenAI(base_url=url(proc), api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="self_consistency", messages=Q)
    assert caught.value.status_code == 502
    message = caught.value.message
    assert "model call of workflow 'self_consistency' failed (status 400)" in message
    port = sim.url.split(":")[2].split("/")[0]
    assert port not in message and "127.0.0.1" not in message and "injected" not in message

    async def logged() -> bool:  # the server's stderr line may reach us after its reply
        return any("injected fault" in line for line in proc.lines)

    await until(logged)
    log = "\n".join(proc.lines)
    assert "user:***@127.0.0.1" in log and PASSWORD not in log


async def test_a_failing_stream_ends_with_an_error_event_and_done(
    failing: tuple[SimServer, ManagedProcess],
) -> None:
    sim, proc = failing
    events: list[str] = []
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"model": "self_consistency", "messages": Q, "stream": True}
        async with client.stream("POST", url(proc) + "/chat/completions", json=body) as reply:
            assert reply.status_code == 200
            events = [
                line[5:].strip() async for line in reply.aiter_lines() if line.startswith("data:")
            ]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "model_error" and sim.url not in error["message"]
    with pytest.raises(openai.APIError):  # the official client raises on the error event
        async for _ in await openai.AsyncOpenAI(
            base_url=url(proc), api_key="unused"
        ).chat.completions.create(model="self_consistency", messages=Q, stream=True):
            pass


async def test_serving_at_is_printed_once_the_socket_listens() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml",
        "--backend", "sim", "--port", "0", cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = ""
        while "serving" not in line:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "the server exited"
        url = line.split(" at ")[1].strip()
        async with httpx.AsyncClient(timeout=10) as client:  # at once, no retry
            assert (await client.get(url.removesuffix("/v1") + "/health")).status_code == 200
    finally:
        proc.terminate()
        await proc.wait()
