"""MCP servers named in a workflow's ``tools: mcp:`` become concilium tools.

The test writes a tiny MCP server (the official SDK's MCPServer) into tmp_path with
one read-only tool and one destructive one, names it in a ReAct workflow, and runs
the workflow on the simulated server, whose scripted reply calls the MCP tool.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from concilium._errors import WorkflowError
from concilium.app import Session
from concilium.graphs import Event
from concilium.graphs.workflows import load_workflow
from concilium.tools import McpServer, mcp_tools

SERVER = '''
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("kv")
TABLE = {"alpha": "ALPHA-42"}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def lookup(key: str) -> str:
    """The value stored under a key."""
    return TABLE.get(key, "no such key")


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def erase(key: str) -> str:
    """Delete a key."""
    return "erased"


server.run()
'''

WORKFLOW = """
name: kv_react
description: Look a key up through an MCP server.
models: {m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}}
agents: {agent: {model: m, temperature: 0.0, max_tokens: 100}}
tools:
  mcp:
    kv: {command: [PYTHON, server.py]}
workflow: {kind: react, agent: agent, tools: [lookup], max_steps: 3}
simulate:
  seed: 1
  rules:
    - agent: agent
      replies:
        - "Thought: look it up.\\nAction: lookup(\\"alpha\\")"
        - "Answer: done"
"""


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    (tmp_path / "server.py").write_text(SERVER)
    path = tmp_path / "kv.yaml"
    path.write_text(WORKFLOW.replace("PYTHON", json.dumps(sys.executable)))
    return path


def test_tools_carry_the_servers_hints(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    server = McpServer(command=[sys.executable, "server.py"], cwd=str(tmp_path))
    tools = {tool.name: tool for tool in mcp_tools("kv", server)}
    assert set(tools) == {"lookup", "erase"}
    assert tools["lookup"].side_effects is False and tools["lookup"].idempotent is True
    assert tools["erase"].side_effects is True and tools["erase"].idempotent is False
    assert tools["lookup"].params == ("key",)
    assert tools["lookup"].description == "The value stored under a key."


async def test_react_calls_the_mcp_tool_and_reads_its_result(workflow_file: Path) -> None:
    workflow = load_workflow(workflow_file)
    events: list[Event] = []
    async with Session("sim") as session:
        result = await session.run(workflow, "What is stored under alpha?", on_event=events.append)
    tool_events = [e for e in events if e["type"] == "tool"]
    assert [(e["tool"], e["status"]) for e in tool_events] == [("lookup", "ok")]
    assert result.tool_calls == 1
    # the MCP tool's answer reached the model as the observation of its action
    assert "ALPHA-42" in json.dumps(result.to_json())


async def test_a_bad_argument_comes_back_as_a_tool_error(tmp_path: Path) -> None:
    from concilium.tools import ToolError

    (tmp_path / "server.py").write_text(SERVER)
    server = McpServer(command=[sys.executable, "server.py"], cwd=str(tmp_path))
    lookup = next(t for t in mcp_tools("kv", server) if t.name == "lookup")
    assert await lookup({"key": "alpha"}) == "ALPHA-42"
    with pytest.raises(ToolError, match="bad arguments for lookup"):
        await lookup({"nope": 1})


def test_an_unreachable_server_fails_at_load_time(tmp_path: Path) -> None:
    path = tmp_path / "kv.yaml"
    text = WORKFLOW.replace("{command: [PYTHON, server.py]}", '{url: "http://127.0.0.1:9/mcp"}')
    path.write_text(text.replace("PYTHON", sys.executable))
    with pytest.raises(WorkflowError, match="MCP server 'kv'"):
        load_workflow(path)


def test_a_server_needs_a_command_or_a_url(tmp_path: Path) -> None:
    path = tmp_path / "kv.yaml"
    path.write_text(WORKFLOW.replace("{command: [PYTHON, server.py]}", "{args: [x]}"))
    with pytest.raises(WorkflowError, match="either command"):
        load_workflow(path)
