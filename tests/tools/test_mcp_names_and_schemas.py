"""MCP tools as servers really name and describe them.

Names with hyphens and dots (``server-everything``'s ``get-sum``, ``files.read``)
are callable from every tool-using pattern: a ReAct action, a plan line (text and
JSON), an overlapped ``[CALL]`` frame. A tool whose input schema is not a JSON
Schema (``properties`` a list, ``required`` a number, an unknown type) is refused
when the workflow is loaded, naming the server, the tool and the field; it used to
end in a traceback inside ``validate``.

The server is a real MCP server over stdio (the SDK's low-level ``Server``, which
sends whatever schema it is given); the models are the simulated server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from concilium._errors import WorkflowError
from concilium.app import Session
from concilium.graphs.workflows import load_workflow

SERVER = """
import json, sys
import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

TOOLS = json.loads(sys.argv[1])


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[
        types.Tool(name=t["name"], description=t["name"], input_schema=t["schema"]) for t in TOOLS
    ])


async def call_tool(ctx, params):
    args = params.arguments or {}
    if params.name == "get-sum":
        text = str(args["a"] + args["b"])
    else:
        text = f"contents of {args['path']}"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("raw", on_list_tools=list_tools, on_call_tool=call_tool)


async def main():
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


anyio.run(main)
"""

NUMBERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
PATH = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
GOOD = [{"name": "get-sum", "schema": NUMBERS}, {"name": "files.read", "schema": PATH}]

HEAD = """
name: mcp_names
models: {m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}}
agents: {agent: {model: m}, joiner: {model: m}}
tools:
  mcp:
    raw: {command: COMMAND}
"""

# pattern -> (its workflow: and simulate: sections, the tool results that must appear)
PATTERNS: dict[str, str] = {
    "react": """
workflow: {kind: react, agent: agent, tools: [get-sum, files.read], max_steps: 4}
simulate:
  rules:
    - agent: agent
      replies:
        - "Action: get-sum(a=2, b=3)"
        - 'Action: files.read("notes.txt")'
        - "Answer: done"
""",
    "plan_and_execute text": """
workflow: {kind: plan_and_execute, planner: agent, joiner: joiner, tools: [get-sum, files.read]}
simulate:
  rules:
    - agent: agent
      replies: ["1. get-sum(2, 3)\\n2. files.read(\\"notes.txt\\")\\n3. join()"]
    - agent: joiner
      replies: ["Action: Finish(done)"]
""",
    "plan_and_execute json": """
workflow:
  kind: plan_and_execute
  planner: agent
  joiner: joiner
  tools: [get-sum, files.read]
  plan_format: json
simulate:
  rules:
    - agent: agent
      replies:
        - '{"tasks": [{"id": 1, "tool": "get-sum", "args": {"a": 2, "b": 3}},
                      {"id": 2, "tool": "files.read", "args": {"path": "notes.txt"}}]}'
    - agent: joiner
      replies: ["Action: Finish(done)"]
""",
    "overlapped_tools": """
workflow: {kind: overlapped_tools, agent: agent, tools: [get-sum, files.read], answer: text}
simulate:
  rules:
    - agent: agent
      match: '\\[INTR\\] c1 '
      replies: ["done"]
    - agent: agent
      replies:
        - '[CALL] c1 [HEAD] get-sum(2, 3) [END] [CALL] c2 [HEAD] files.read("notes.txt") [END] [TRAP][END]'
""",
}


def _workflow(tmp_path: Path, body: str, tools: list[dict[str, Any]]) -> Path:
    (tmp_path / "server.py").write_text(SERVER)
    command = json.dumps([sys.executable, "server.py", json.dumps(tools)])
    path = tmp_path / "wf.yaml"
    path.write_text(HEAD.replace("COMMAND", command) + body)
    return path


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
async def test_hyphens_and_dots_in_tool_names_are_callable(tmp_path: Path, pattern: str) -> None:
    workflow = load_workflow(_workflow(tmp_path, PATTERNS[pattern], GOOD))
    async with Session("sim") as session:
        result = await session.run(workflow, "Add 2 and 3, then read the notes.")
    shown = json.dumps(result.to_json())
    assert result.tool_calls == 2, shown
    assert "contents of notes.txt" in shown and "error:" not in shown, shown


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "properties as a list": (
        {"type": "object", "properties": ["a"]},
        "inputSchema field properties is invalid: ['a'] is not of type 'object'",
    ),
    "required as a number": (
        {"type": "object", "required": 5},
        "inputSchema field required is invalid: 5 is not of type 'array'",
    ),
    "an unknown type": (
        {"type": "object", "properties": {"a": {"type": "strin"}}},
        "inputSchema field properties/a/type is invalid",
    ),
    "a reserved argument name": (
        {"type": "object", "properties": {"model_config": {"type": "string"}}},
        "the argument name 'model_config' cannot be used",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_tool_schema_that_is_not_json_schema_is_refused_at_load(
    tmp_path: Path, case: str
) -> None:
    schema, message = BAD[case]
    tools = [*GOOD, {"name": "broken", "schema": schema}]
    path = _workflow(tmp_path, PATTERNS["react"], tools)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    text = str(info.value)
    assert text.startswith(f"{path}:7: MCP server 'raw' ("), text  # the line of raw:
    assert "tool 'broken'" in text and message in text, text
