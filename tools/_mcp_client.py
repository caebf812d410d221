"""Tools of MCP servers named in a workflow file, as concilium tools.

A workflow's ``tools: {mcp: {NAME: {command: [...], args: [...]}}}`` (a server
started over stdio) or ``{url: http://127.0.0.1:PORT/mcp}`` (streamable HTTP) names
an MCP server. The command comes only from the workflow file, never from a request
or a model. At load time the server's tools are listed; each becomes a
:class:`Tool` whose arguments are checked against the tool's input schema and whose
flags come from its annotations: ``readOnlyHint`` makes it free of side effects
(the executor may retry it and run it in parallel), ``destructiveHint`` or no hint
at all marks it as having side effects (the MCP default for a tool is "may write").

Each call opens its own connection (a stdio server is started for the call and
stopped after it): nothing outlives a run, at the price of a process start per call.

Example:
    >>> McpServer(url="http://127.0.0.1:9/mcp").describe()
    'http://127.0.0.1:9/mcp'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, create_model

from concilium._errors import UserError

from ._registry import Tool, ToolError

if TYPE_CHECKING:
    from mcp.types import CallToolResult
    from mcp.types import Tool as McpTool

__all__ = ["McpServer", "mcp_tools"]

INSTALL_HINT = "MCP servers in tools: need the official SDK: pip install 'concilium[mcp]'"
T = TypeVar("T")

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list[Any],
    "object": dict[str, Any],
}


@dataclass(frozen=True)
class McpServer:
    """Where an MCP server is: a command run over stdio, or a streamable HTTP URL.

    Attributes:
        command: the program and its first arguments (from the workflow file only).
        args: more arguments after ``command``.
        url: a streamable HTTP endpoint, such as ``http://127.0.0.1:8090/mcp``.
        cwd: the folder the command runs in (the workflow's folder).
        timeout: seconds one tool call may take.
    """

    command: Sequence[str] = ()
    args: Sequence[str] = ()
    url: str | None = None
    cwd: str | None = None
    timeout: float = 60.0
    env: Mapping[str, str] = field(default_factory=dict[str, str])

    def describe(self) -> str:
        """The server in words, for error messages."""
        return self.url or " ".join([*self.command, *self.args])

    def _target(self) -> Any:
        from mcp import StdioServerParameters

        if self.url:
            return self.url
        if not self.command:
            raise UserError("an MCP server needs command: [program, ...] or url: http://.../mcp")
        return StdioServerParameters(
            command=self.command[0],
            args=[*self.command[1:], *self.args],
            cwd=self.cwd,
            env=dict(self.env) or None,
        )

    async def list_tools(self) -> list[McpTool]:
        """The server's tools (all pages)."""
        from mcp import Client

        async with Client(self._target(), read_timeout_seconds=self.timeout) as client:
            tools: list[McpTool] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools

    async def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call one tool on a fresh connection."""
        from mcp import Client

        async with Client(self._target(), read_timeout_seconds=self.timeout) as client:
            return await client.call_tool(name, arguments)


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


_TOOL_NAME = re.compile(r"[\w.-]{1,128}")
"""What a plan line or a ReAct action can call (MCP's letters, digits, _, - and .)."""


def _checked_schema(where: str, tool: McpTool) -> dict[str, Any]:
    """The tool's input schema once its name and schema are usable: JSON Schema's
    meta-schema (``properties`` an object, ``required`` a list of names, ...) and
    MCP's rule that the arguments are an object. ``UserError`` names the field."""
    from jsonschema import SchemaError, validators  # a dependency of the MCP SDK

    fix = "fix the tool in the server, or leave the server out of tools.mcp"
    if not _TOOL_NAME.fullmatch(tool.name):
        raise UserError(
            f"{where}: the tool name {tool.name[:140]!r} is not 1-128 letters, digits, _, - "
            f"and . (what plans and ReAct actions can call); {fix}"
        )
    schema: Any = tool.input_schema or {}
    try:
        checker = validators.validator_for(schema, default=validators.Draft202012Validator)
        checker.check_schema(schema)
    except SchemaError as exc:
        field = "/".join(map(str, exc.absolute_path)) or "(the schema itself)"
        raise UserError(
            f"{where}: inputSchema field {field} is invalid: {exc.message}; {fix}"
        ) from None
    except RecursionError:
        raise UserError(f"{where}: inputSchema is nested too deeply to check; {fix}") from None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise UserError(f'{where}: inputSchema must describe an object ("type": "object"); {fix}')
    return cast("dict[str, Any]", schema)


def _args_model(where: str, tool: McpTool) -> tuple[type[BaseModel], tuple[str, ...]]:
    schema = _checked_schema(where, tool)
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    for name, prop in properties.items():
        type_name = prop.get("type") if isinstance(prop, dict) else None
        kind = _JSON_TYPES.get(type_name, Any) if isinstance(type_name, str) else Any
        fields[name] = (kind, ...) if name in required else (kind | None, None)
    try:
        model = create_model(f"{tool.name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    except (NameError, TypeError, ValueError) as exc:
        raise UserError(
            f"{where}: an argument name cannot be used ({exc}); rename it in the server"
        ) from None
    unusable = sorted(set(fields) - set(model.model_fields))  # _x, model_config: not fields
    if unusable:
        raise UserError(
            f"{where}: the argument name {unusable[0]!r} cannot be used (names starting with _ "
            "or model_ are reserved); rename it in the server"
        )
    return model, tuple(fields)


def _text(result: CallToolResult) -> str:
    parts = [getattr(block, "text", None) for block in result.content]
    text = "\n".join(part for part in parts if isinstance(part, str))
    if not text and result.structured_content is not None:
        import json

        text = json.dumps(result.structured_content, ensure_ascii=False)
    return text


def _as_tool(name: str, server: McpServer, tool: McpTool) -> Tool:
    args, params = _args_model(
        f"MCP server {name!r} ({server.describe()}), tool {tool.name!r}", tool
    )
    hints = tool.annotations
    read_only = bool(hints and hints.read_only_hint)
    idempotent = read_only or bool(hints and hints.idempotent_hint)

    async def call_mcp(**kwargs: Any) -> str:
        arguments = {key: value for key, value in kwargs.items() if value is not None}
        try:
            result = await server.call(tool.name, arguments)
        except Exception as exc:  # the connection or the protocol failed: the model is told
            raise ToolError(
                f"{tool.name} (MCP server {server.describe()}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if result.is_error:
            raise ToolError(f"{tool.name}: {_text(result) or 'the MCP tool reported an error'}")
        return _text(result)

    return Tool(
        name=tool.name,
        fn=call_mcp,
        description=tool.description or tool.name,
        args=args,
        timeout=server.timeout,
        side_effects=not read_only,
        idempotent=idempotent,
        params=params,
    )


def mcp_tools(name: str, server: McpServer) -> list[Tool]:
    """List the tools of the MCP server ``name`` and wrap each as a concilium tool.

    Raises:
        UserError: the SDK is missing, or the server cannot be reached or listed
            (the message names the server and how it was started).

    Example:
        >>> mcp_tools("none", McpServer(url="http://127.0.0.1:9/mcp"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        concilium._errors.UserError: MCP server 'none' (http://127.0.0.1:9/mcp): cannot list its tools...
    """
    try:
        import mcp  # noqa: F401  (only checks it is there)
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    try:
        listed = _run_blocking(asyncio.wait_for(server.list_tools(), server.timeout))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"MCP server {name!r} ({server.describe()}): cannot list its tools "
            f"({type(exc).__name__}: {exc}); check the command or url in tools.mcp"
        ) from None
    return [_as_tool(name, server, tool) for tool in listed]
