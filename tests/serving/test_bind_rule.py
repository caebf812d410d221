"""One rule for where a server listens (issue 21 item 10), for ``serve api``, ``ui`` and
``serve mcp --transport http`` alike, each run as a user runs it (a subprocess) on
127.0.0.2, another loopback address (Linux routes all of 127/8 to loopback):

* off the default address 127.0.0.1 each needs an API key (``serve mcp`` used to run
  without one there);
* with the key each answers its own address (``serve api`` and ``ui`` used to refuse
  it) and refuses a foreign ``Host`` or ``Origin`` (``serve mcp`` used to take any).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from concilium.serving import ManagedProcess, check_bind

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.2"
KEY = "a-key-of-24-characters-x"
DEBATE = str(ROOT / "examples" / "debate.yaml")
COMMANDS = {
    "api": ["serve", "api", DEBATE, "--backend", "sim"],
    "ui": ["ui", "--backend", "sim"],
    "mcp": ["serve", "mcp", DEBATE, "--backend", "sim", "--transport", "http"],
}
PATHS = {"api": "/v1/models", "ui": "/", "mcp": "/mcp"}  # a page of each, behind the key


def _argv(kind: str, *extra: str) -> list[str]:
    return [sys.executable, "-P", "-m", "concilium", *COMMANDS[kind], "--host", HOST, *extra]


@contextlib.asynccontextmanager
async def _serve(kind: str) -> AsyncIterator[str]:
    """The base URL of ``kind``'s server on 127.0.0.2 with an API key, until the block ends."""
    proc = ManagedProcess(
        f"concilium {kind}",
        _argv(kind, "--port", "0", "--api-key", KEY),
        ready_pattern=r" at (?P<url>http://[^/\s]+)",
        deadline=60,
    )
    await proc.start()
    try:
        assert proc.url is not None and proc.url.startswith(f"http://{HOST}:")
        yield proc.url
    finally:
        await proc.stop()


async def _get(kind: str, url: str, **headers: str) -> httpx.Response:
    """A request of ``kind``'s page with the key (the MCP one a POST, as its clients send)."""
    headers = {"Authorization": f"Bearer {KEY}", **headers}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        if kind == "mcp":
            return await client.post(PATHS[kind], json={}, headers=headers)
        return await client.get(PATHS[kind], headers=headers)


@pytest.mark.parametrize("kind", sorted(COMMANDS))
async def test_off_the_default_address_every_server_needs_a_key(kind: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_argv(kind, "--port", "0"), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)  # the old code kept serving
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    message = err.decode()
    assert proc.returncode == 2, message
    assert f"refusing to serve on {HOST} without an API key" in message
    assert "--api-key" in message and "Traceback" not in message


@pytest.mark.parametrize("kind", sorted(COMMANDS))
async def test_every_server_answers_its_own_address_and_refuses_a_foreign_host_or_origin(
    kind: str,
) -> None:
    async with _serve(kind) as url:
        await _check_hosts(kind, url)


async def _check_hosts(kind: str, url: str) -> None:
    own = url.removeprefix("http://")
    # its own address (the MCP endpoint answers a bare POST with a protocol error, not 403)
    reply = await _get(kind, url)
    assert reply.status_code != 403 and reply.status_code < 500, reply.text
    if kind != "mcp":
        assert reply.status_code == 200, reply.text
        same_site = await _get(kind, url, Origin=f"http://{own}")
        assert same_site.status_code == 200, same_site.text
    # a name that resolves here by DNS rebinding, and loopback's other names: not its own
    port = own.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port}", f"localhost:{port}"):
        refused = await _get(kind, url, Host=host)
        assert refused.status_code == 403 and "Host" in refused.text, (host, refused.text)
    for origin in ("http://evil.example", f"http://127.0.0.1:{port}", "null"):
        refused = await _get(kind, url, Origin=origin)
        assert refused.status_code == 403 and "Origin" in refused.text, (origin, refused.text)


async def test_the_mcp_client_calls_a_tool_on_its_own_address() -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    async with _serve("mcp") as url, http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["debate"]
            result = await client.call_tool("debate", {"question": "What is 17+25?"})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["calls"] > 0


@pytest.mark.parametrize(
    "host, needs_key",
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.0.0.2", True),
        ("127.1.2.3", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("192.0.2.7", True),
    ],
)
def test_only_the_default_address_serves_without_a_key(host: str, needs_key: bool) -> None:
    from concilium._errors import UserError

    if needs_key:
        with pytest.raises(UserError, match="--api-key"):
            check_bind(host, None)
        with pytest.raises(UserError, match="at least 16"):
            check_bind(host, "short")
    else:
        check_bind(host, None)
    check_bind(host, KEY)
