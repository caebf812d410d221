"""What agents can do: tools, and the safe arithmetic the calculator tool uses.

Typed tools and LLMCompiler-style parallel tool dispatch are the subject of their own
issue; what is here now is the safe arithmetic evaluator (no ``eval``), which the
simulated server uses to know the right answer to arithmetic questions.

Example:
    >>> from concilium.tools import evaluate
    >>> evaluate("(3 + 4) * 2")
    14
"""

from ._arithmetic import NotArithmetic
from ._arithmetic import evaluate, find_expression, format_number

__all__ = ["evaluate", "find_expression", "format_number", "NotArithmetic"]
