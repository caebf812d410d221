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

__all__ = [
    # tools
    "Tool",
    "ToolRegistry",
    "ToolError",
    "builtin_tools",
    "calculator",
    "CALCULATOR",
    "DocumentSearch",
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
