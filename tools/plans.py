"""Plans of tool calls: LLMCompiler's numbered text format, read line by line as it
streams (``PlanParser``, ``parse_plan``), or a JSON task list (``parse_json_plan``).
Both give ``Task`` values whose arguments may reference earlier tasks' results
(``resolve`` substitutes them); arguments are read with a literal parser only.

Example:
    >>> from concilium.tools import builtin_tools
    >>> from concilium.tools.plans import parse_plan
    >>> [t.tool for t in parse_plan('1. calculator("6 * 7")\\n2. join()', builtin_tools())]
    ['calculator', 'join']
"""

from ._plan import (
    END_OF_PLAN,
    PlanError,
    PlanParser,
    Task,
    parse_arguments,
    parse_json_plan,
    parse_plan,
    resolve,
)

__all__ = [
    "PlanParser",
    "parse_plan",
    "parse_json_plan",
    "parse_arguments",
    "Task",
    "resolve",
    "PlanError",
    "END_OF_PLAN",
]
