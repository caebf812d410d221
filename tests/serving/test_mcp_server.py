"""``concilium serve mcp``: workflows as MCP tools, driven by the official MCP client.

The server runs as its own process (the way an MCP host starts it) over stdio and
over streamable HTTP on loopback, on the simulated server; its answers are compared
with a direct run of the same workflow, whose simulated server has the same seed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client, MCPError, StdioServerParameters  # noqa: E402

from concilium.app import Session, load  # noqa: E402
from concilium.graphs.workflows import load_workflow  # noqa: E402
from concilium.serving import check_bind  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEBATE = str(REPO / "examples" / "debate.yaml")
QUESTION = "What is 17+25?"
SERVE = [sys.executable, "-P", "-m", "concilium", "serve", "mcp", DEBATE, "--backend", "sim"]


async def direct_answer(question: str) -> tuple[str | None, int]:
    async with Session("sim") as session:
        result = await session.run(load(DEBATE), question)
    return result.answer, result.calls


async def check_server(client: Client) -> None:
    listed = (await client.list_tools()).tools
    assert [tool.name for tool in listed] == ["debate"]
    tool = listed[0]
    assert tool.description == load_workflow(DEBATE).spec.description
    schema = tool.input_schema
    assert schema["properties"]["question"]["type"] == "string"
    assert schema["required"] == ["question"]

    result = await client.call_tool("debate", {"question": QUESTION})
    assert not result.is_error
    answer, calls = await direct_answer(QUESTION)
    assert answer is not None
    assert result.content[0].text == answer  # type: ignore[union-attr]
    structured = result.structured_content
    assert structured is not None
    assert structured["answer"] == answer and structured["calls"] == calls
    assert structured["tokens"]["prompt"] > 0 and structured["tokens"]["completion"] > 0

    # a bad argument is an MCP error (a protocol error or an isError result), not a crash
    for bad in ({"question": 5}, {}, {"question": "   "}):
        try:
            failed = await client.call_tool("debate", bad)
        except MCPError:
            continue
        assert failed.is_error, bad
    # still serving (a second draw: the simulated server samples a repeated prompt
    # afresh, as a model at temperature > 0 does, so its answer may differ)
    again = await client.call_tool("debate", {"question": QUESTION})
    assert not again.is_error and again.structured_content is not None
    assert again.structured_content["calls"] == calls


async def test_stdio_lists_and_runs_the_workflow() -> None:
    params = StdioServerParameters(command=SERVE[0], args=SERVE[1:], cwd=str(REPO))
    async with Client(params, read_timeout_seconds=60) as client:
        await check_server(client)


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--transport", "http", "--port", "0", cwd=REPO, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    try:
        async with asyncio.timeout(60):
            while url is None:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"serve mcp exited early: {''.join(lines)}")
                lines.append(line)
                found = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", line)
                url = found.group(1) if found else None
        yield url
    finally:
        proc.terminate()
        await proc.wait()


async def test_streamable_http_lists_and_runs_the_workflow(http_server: str) -> None:
    async with Client(http_server, read_timeout_seconds=60) as client:
        await check_server(client)


def test_http_beyond_loopback_needs_a_key() -> None:
    from concilium._errors import UserError

    with pytest.raises(UserError, match="api-key"):
        check_bind("0.0.0.0", None)


async def test_cli_refuses_an_open_address_without_a_key() -> None:
    proc = await asyncio.create_subprocess_exec(
        *SERVE,
        "--transport",
        "http",
        "--host",
        "0.0.0.0",
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"api-key" in err


async def test_the_research_assistant_is_a_tool_that_returns_its_cited_report() -> None:
    research = str(REPO / "examples" / "research_assistant.yaml")
    params = StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:6], DEBATE, research, *SERVE[7:]], cwd=str(REPO)
    )
    async with Client(params, read_timeout_seconds=120) as client:
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        assert names == ["debate", "research_assistant"]
        result = await client.call_tool(
            "research_assistant", {"question": "What was the revenue for 2025?"}
        )
    assert not result.is_error
    report = result.content[0].text  # type: ignore[union-attr]
    assert report.startswith("# ") and "## Sources" in report and "[1]" in report
    assert result.structured_content is not None
    assert result.structured_content["answer"] == report


@pytest.mark.parametrize(
    "header, refused",
    [(None, True), ("Bearer wrong-key-wrong-key", True), ("Bearer k" + "x" * 20, False)],
)
async def test_an_api_key_is_required_as_a_bearer_token(header: str | None, refused: bool) -> None:
    import httpx

    from concilium.serving import create_mcp_server, mcp_http_app

    app = mcp_http_app(
        create_mcp_server({"debate": load_workflow(DEBATE)}),
        bind=("127.0.0.1", 80),  # the client's Host: 127.0.0.1
        api_key="k" + "x" * 20,
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"authorization": header} if header else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        reply = await http.post("/mcp", json={}, headers=headers)
    assert (reply.status_code == 401) is refused
