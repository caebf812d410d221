"""What agents can do: typed tools, a registry that names them, the built-in
calculator and local document search, and plans of tool calls (LLMCompiler format
or JSON) read with a literal parser only.

Example:
    >>> from concilium.tools import builtin_tools, parse_plan
    >>> [t.tool for t in parse_plan('1. calculator("6 * 7")\\n2. join()', builtin_tools())]
    ['calculator', 'join']
"""

from ._arithmetic import NotArithmetic, evaluate, find_expression, format_number
from ._builtin import CALCULATOR, DocumentSearch, builtin_tools, calculator
from ._corpus import CorpusManifest, CorpusQuestion, write_corpus
from ._embeddings import openai_embedder
from ._evidence import Embedder, EvidenceStore, Hit, RefreshReport, default_index_path
from ._ingest import IngestReport, Passage, ingest_folder
from ._mcp_client import McpServer, mcp_tools
from ._plan import (
    END_OF_PLAN,
    JOIN,
    PlanError,
    PlanParser,
    Ref,
    Task,
    parse_arguments,
    parse_json_plan,
    parse_plan,
    resolve,
)
from ._registry import Tool, ToolError, ToolRegistry
from ._tool_text import ToolText

__all__ = [
    # tools
    "Tool",
    "ToolRegistry",
    "ToolError",
    "ToolText",
    "builtin_tools",
    "calculator",
    "CALCULATOR",
    "DocumentSearch",
    # evidence store (local documents with passage IDs)
    "EvidenceStore",
    "Hit",
    "RefreshReport",
    "Embedder",
    "default_index_path",
    "openai_embedder",
    "Passage",
    "IngestReport",
    "ingest_folder",
    "write_corpus",
    "CorpusManifest",
    "CorpusQuestion",
    # tools of MCP servers named in a workflow file
    "McpServer",
    "mcp_tools",
    # plans
    "PlanParser",
    "PlanError",
    "Task",
    "Ref",
    "parse_plan",
    "parse_json_plan",
    "parse_arguments",
    "resolve",
    "END_OF_PLAN",
    "JOIN",
    # arithmetic
    "evaluate",
    "find_expression",
    "format_number",
    "NotArithmetic",
]
