"""A safe arithmetic evaluator: numbers, + - * / // % **, parentheses, unary signs.

It parses with ``ast`` and walks only the node types above, so model or user text
can never reach ``eval``. Powers are bounded so ``9**9**9`` cannot hang the process.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from decimal import Decimal

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
MAX_EXPONENT = 100
MAX_LENGTH = 500

# A run of numbers joined by operators, e.g. "12 * 7" or "(3 + 4) / 2".
_EXPRESSION = re.compile(r"[\d(][\d\s.()+\-*/%x×÷^]*[\d)]")


class NotArithmetic(ValueError):
    """The text is not plain arithmetic; the message says which part."""


def evaluate(expression: str) -> float | int:
    """Evaluate plain arithmetic.

    Example:
        >>> evaluate("12 * 7")
        84
        >>> evaluate("2 ** 0.5 * 2 ** 0.5")
        2.0000000000000004
        >>> evaluate("__import__('os')")
        Traceback (most recent call last):
        ...
        concilium.tools._arithmetic.NotArithmetic: not arithmetic: a call (__import__(...)) is not allowed; use numbers and + - * / // % ** ( )
    """
    if len(expression) > MAX_LENGTH:
        raise NotArithmetic(f"expression longer than {MAX_LENGTH} characters")
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise NotArithmetic(f"not arithmetic: {expression!r} does not parse") from None
    return _walk(tree.body)


def _walk(node: ast.AST) -> float | int:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise NotArithmetic(f"exponent {right} is larger than {MAX_EXPONENT}")
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise NotArithmetic("division by zero") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand))
    what = {
        ast.Call: "a call",
        ast.Name: "a name",
        ast.Attribute: "an attribute",
        ast.Subscript: "a subscript",
    }.get(type(node), type(node).__name__)
    shown = ast.unparse(node)
    if isinstance(node, ast.Call):
        shown = ast.unparse(node.func) + "(...)"
    raise NotArithmetic(
        f"not arithmetic: {what} ({shown}) is not allowed; use numbers and + - * / // % ** ( )"
    )


def find_expression(text: str) -> str | None:
    """The first arithmetic expression with an operator in ``text`` ("What is 12 * 7?")."""
    for match in _EXPRESSION.finditer(text):
        candidate = match.group(0).strip()
        if any(op in candidate for op in "+-*/%x×÷^") and re.search(r"\d\s*\S+\s*\d", candidate):
            candidate = re.sub(r"(?<=\d)\s*x\s*(?=\d)", "*", candidate)
            try:
                evaluate(candidate)
            except NotArithmetic:
                continue
            return candidate
    return None


def format_number(value: float | int) -> str:
    """84.0 -> '84'; 0.1 + 0.2 -> '0.3' (12 significant digits)."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(round(value, 12))).normalize(), "f")
