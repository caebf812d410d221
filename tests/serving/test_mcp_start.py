"""`serve mcp` over stdio answers the handshake before it imports what building and
running a workflow need (the graphs, the agents, the model client, the plots): those
imports take seconds, and an MCP host gives the handshake a deadline (the Inspector's
is 15 s). The server runs with ``-X importtime``, so its stderr lists each module as it
is imported; what it lists when the handshake is answered is what answering cost. The
time it takes is measured by ``concilium bench mcp-start``, not here."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

REPO = Path(__file__).resolve().parents[2]
SERVE = ["-X", "importtime", "-P", "-m", "concilium", "serve", "mcp", "examples/debate.yaml"]
HEAVY = ("langgraph", "litellm", "matplotlib", "concilium.graphs", "concilium.agents")


def imported(log: Path) -> set[str]:
    """The modules ``-X importtime`` has reported so far."""
    lines = log.read_text().splitlines()
    return {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


# "legacy" is the initialize handshake (protocol versions up to 2025-11-25), "auto"
# the SDK's default, which begins with server/discover (2026-07-28)
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_handshake_is_answered_before_the_heavy_imports(
    tmp_path: Path, mode: Any
) -> None:
    log = tmp_path / "stderr.txt"
    params = StdioServerParameters(
        command=sys.executable, args=[*SERVE, "--backend", "sim"], cwd=str(REPO)
    )
    with log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:
            # answered; the server builds when the client's next message arrives
            before = imported(log)
            assert "mcp.server.mcpserver" in before  # the log is the server's imports
            assert heavy(before) == []
            tools = (await client.list_tools()).tools
            assert [tool.name for tool in tools] == ["debate"]  # waited for the build
            assert "langgraph" in imported(log)  # which imported them
            result = await client.call_tool("debate", {"question": "What is 2 + 3?"})
            assert not result.is_error and result.content


async def test_a_workflow_that_cannot_be_built_is_the_answer_to_each_request() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "concilium", "serve", "mcp", "missing.yaml", "-b", "sim",
        cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    hello = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        '"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n'
        '{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
        '{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n'
    )
    proc.stdin.write(hello.encode())
    await proc.stdin.drain()
    async with asyncio.timeout(120):
        handshake = json.loads(await proc.stdout.readline())
        assert handshake["id"] == 1 and "result" in handshake
        listed = json.loads(await proc.stdout.readline())
    assert listed["id"] == 2
    assert "missing.yaml: no such file" in listed["error"]["message"], listed
    proc.stdin.close()  # the host gives up: the exit code and stderr say why
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "error: missing.yaml: no such file" in err.decode()
