"""Workflows as MCP tools: ``concilium serve mcp WORKFLOW...`` over stdio or streamable HTTP.

Each workflow becomes one tool of an MCP server built with the official SDK (``mcp``
2.x, the optional extra ``concilium[mcp]``): the tool's name is the workflow's name,
its description the workflow's ``description:``, its input ``{question: string}``. A
call runs the workflow once and returns the answer as text, plus structured content
with ``answer``, ``calls`` and ``tokens``. A failed run comes back as an MCP tool
error (``isError``) with the reason, never as a crash of the server.

The HTTP transport listens where :func:`check_bind` allows (127.0.0.1, or elsewhere
with an API key, then required as ``Authorization: Bearer KEY``) and answers only
requests whose ``Host`` and ``Origin`` name its own address.

Example:
    >>> mcp_result(None, calls=0, prompt_tokens=0, completion_tokens=0)["answer"] is None
    True
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from concilium._errors import ConciliumError, UserError

from ._bind import allowed_hosts, host_guard

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.types import CallToolResult
    from starlette.types import ASGIApp, Receive, Scope, Send

    from concilium.graphs.workflows import Workflow

INSTALL_HINT = "the MCP server needs the official SDK: pip install 'concilium[mcp]'"
MAX_QUESTION = 100_000  # characters of a question; a longer one is refused, not run


class McpTokens(TypedDict):
    prompt: int
    completion: int


class McpRunResult(TypedDict):
    """The structured content of a workflow tool's result."""

    answer: str | None
    calls: int
    tokens: McpTokens


def mcp_result(
    answer: str | None, *, calls: int, prompt_tokens: int, completion_tokens: int
) -> McpRunResult:
    """The structured content a workflow tool returns for one run.

    Example:
        >>> mcp_result("4", calls=3, prompt_tokens=10, completion_tokens=2)["tokens"]
        {'prompt': 10, 'completion': 2}
    """
    return {
        "answer": answer,
        "calls": calls,
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
    }


def _require_sdk() -> None:
    try:
        import mcp.server.mcpserver  # noqa: F401  (only checks it is there)
    except ImportError:
        raise UserError(INSTALL_HINT) from None


def _tool_fn(workflow: Workflow) -> Callable[[str], Awaitable[CallToolResult]]:
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CallToolResult, TextContent

    from concilium.graphs import run

    async def run_workflow(question: str) -> CallToolResult:
        if not question.strip():
            raise ToolError("question is empty; ask the workflow something")
        if len(question) > MAX_QUESTION:
            raise ToolError(f"question is {len(question)} characters; the limit is {MAX_QUESTION}")
        try:
            result = await run(workflow.graph, question, budget=workflow.budget)
        except ConciliumError as exc:
            # the caller's model reads this; the server goes on serving
            raise ToolError(f"workflow {workflow.name!r} failed: {exc}") from None
        content = mcp_result(
            result.answer,
            calls=result.calls,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
        )
        text = result.answer if result.answer is not None else "(the workflow gave no answer)"
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=dict(content),
        )

    # the SDK reads the signature with eval_str; this module's annotations are strings
    run_workflow.__annotations__ = {"question": str, "return": CallToolResult}
    return run_workflow


def create_mcp_server(
    workflows: Mapping[str, Workflow], *, server: MCPServer | None = None
) -> MCPServer:
    """An MCP server with one tool per workflow (name, description, ``{question}``).

    Args:
        workflows: loaded workflows by name (bound to their backend already).
        server: add the tools to this MCP server, which may be serving already
            (``serve mcp`` over stdio answers ``initialize`` before it builds the
            workflows); by default a new one.

    Raises:
        UserError: when the ``mcp`` SDK is not installed, with the install command.

    Example:
        >>> import asyncio, pathlib, tempfile
        >>> from concilium.graphs.workflows import load_workflow
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "vote.yaml"
        >>> _ = path.write_text('''
        ... name: vote
        ... description: Three samples, majority answer.
        ... models: {m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}}
        ... agents: {a: {model: m}}
        ... workflow: {kind: self_consistency, agent: a, samples: 3}
        ... ''')
        >>> server = create_mcp_server({"vote": load_workflow(path)})
        >>> [(t.name, t.description) for t in asyncio.run(server.list_tools())]
        [('vote', 'Three samples, majority answer.')]
    """
    _require_sdk()
    from mcp.server.mcpserver import MCPServer

    if server is None:
        server = MCPServer(
            name="concilium", instructions="Each tool runs one concilium workflow on a question."
        )
    for name, workflow in workflows.items():
        server.add_tool(
            _tool_fn(workflow),
            name=name,
            description=workflow.description,
            structured_output=False,
        )
    return server


def bearer_guard(app: ASGIApp, api_key: str | None) -> ASGIApp:
    """Wrap an ASGI app so HTTP requests need ``Authorization: Bearer API_KEY`` (when set)."""
    if not api_key:
        return app
    expected = f"Bearer {api_key}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers", []))
            if not hmac.compare_digest(headers.get(b"authorization", b""), expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"missing or wrong API key\n"})
                return
        await app(scope, receive, send)

    return guarded


def mcp_http_app(server: MCPServer, *, bind: tuple[str, int], api_key: str | None = None) -> Any:
    """The streamable HTTP app (path ``/mcp``) of ``server`` listening on ``bind``
    (host, port): it answers only its own address in ``Host`` and ``Origin`` (the rule
    of ``serve api`` and ``ui``), then only with the API key if one is set."""
    from mcp.server.transport_security import TransportSecuritySettings

    # the SDK guards 127.0.0.1 only, and any port there; host_guard applies the one rule
    unguarded = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(host=bind[0], transport_security=unguarded)
    return host_guard(bearer_guard(app, api_key), allowed_hosts(*bind))
