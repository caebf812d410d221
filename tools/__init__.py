"""What agents can do: typed tools, a registry that names them, the built-in
calculator and local document search, tools of MCP servers; plans of tool calls
(``concilium.tools.plans``) and the evidence store (``concilium.tools.evidence``).

Example:
    >>> from concilium.tools import builtin_tools
    >>> builtin_tools().names()
    ['calculator']
"""

from . import evidence, plans
from ._arithmetic import arithmetic_answer
from ._builtin import builtin_tools
from ._mcp_client import McpServer, mcp_tools
from ._registry import Tool, ToolError, ToolRegistry
from ._tool_text import ToolText

__all__ = [
    # tools
    "Tool",
    "ToolRegistry",
    "ToolError",
    "ToolText",
    "builtin_tools",  # the calculator, and search/read over a folder of documents
    # tools of MCP servers named in a workflow file
    "McpServer",
    "mcp_tools",
    # plans of tool calls (LLMCompiler text or JSON), read with a literal parser only
    "plans",
    # local documents with citable passages
    "evidence",
    # the calculator's arithmetic, for a simulated server that answers it
    "arithmetic_answer",
]
