"""A safe arithmetic evaluator: numbers, + - * / // % **, parentheses, unary signs.

It parses with ``ast`` and walks only the node types above, so model or user text
can never reach ``eval``. Its cost is bounded *before* each step is computed: the
size of every power and product is estimated from its operands (``a ** b`` has about
``b * log2|a|`` bits) and anything over ``MAX_BITS`` (10,000 bits, about 3,000
decimal digits) is refused without being built. With at most ``MAX_LENGTH``
characters of input, every step works on numbers of at most ``MAX_BITS`` bits, so a
whole evaluation takes microseconds and the calculator needs no subprocess to keep
the event loop free (a thread doing one huge big-integer step cannot be timed out,
so such a step must never start). Float overflow, complex results, division by zero
and every other arithmetic failure are ``NotArithmetic`` with a message that names
the part of the expression and the fix.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from decimal import Decimal

Number = int | float

# pow gives a complex number for a negative base and a fractional exponent
_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number | complex]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: lambda a: +a,
    ast.USub: lambda a: -a,
}
_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Call: "a call",
    ast.Name: "a name",
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
}
MAX_BITS = 10_000
"""The largest integer the calculator builds, in bits (about 3,010 decimal digits,
below Python's 4,300-digit limit for turning an integer into text)."""
MAX_LENGTH = 500
_LIMIT = (
    f"the calculator's limit is {MAX_BITS:,} bits (about {int(MAX_BITS * math.log10(2)):,} digits)"
)

# A run of numbers joined by operators, e.g. "12 * 7" or "(3 + 4) / 2".
_EXPRESSION = re.compile(r"[\d(][\d\s.()+\-*/%x×÷^]*[\d)]")


class NotArithmetic(ValueError):
    """The text is not plain arithmetic, or its result is out of range; the message
    says which part and what to do instead."""


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
        >>> evaluate("(9 ** 99) ** 99 ** 99")
        Traceback (most recent call last):
        ...
        concilium.tools._arithmetic.NotArithmetic: the result of (9 ** 99) ** 99 ** 99 would have more than 10,000 bits; the calculator's limit is 10,000 bits (about 3,010 digits); use smaller numbers or split the problem
    """
    if len(expression) > MAX_LENGTH:
        raise NotArithmetic(
            f"expression longer than {MAX_LENGTH} characters; split it into smaller steps"
        )
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise NotArithmetic(f"not arithmetic: {expression!r} does not parse") from None
    try:
        return _Walk(text.strip()).value(tree.body)
    except RecursionError:
        raise NotArithmetic(f"{expression[:60]!r} is nested too deeply") from None


class _Walk:
    """Evaluates a parsed expression; ``source`` is the text, to quote parts of it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def shown(self, node: ast.AST) -> str:
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        return text if len(text) <= 80 else text[:77] + "..."

    def value(self, node: ast.AST) -> Number:
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
        ):
            value: Number = node.value
            if isinstance(value, float) and not math.isfinite(value):
                raise NotArithmetic(
                    f"the number {self.shown(node)} is too large for a float (over 1.8e308)"
                )
            return value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.value(node.left), self.value(node.right)
            if _estimated_bits(node.op, left, right) > MAX_BITS + 1:
                raise NotArithmetic(
                    f"the result of {self.shown(node)} would have more than {MAX_BITS:,} bits; "
                    f"{_LIMIT}; use smaller numbers or split the problem"
                )
            try:
                result = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise NotArithmetic(f"division by zero in {self.shown(node)}") from None
            except OverflowError:
                raise NotArithmetic(self.too_large_for_float(node)) from None
            return self.checked(node, result)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self.value(node.operand))
        what = _FORBIDDEN.get(type(node), type(node).__name__)
        shown = ast.unparse(node)
        if isinstance(node, ast.Call):
            shown = ast.unparse(node.func) + "(...)"
        raise NotArithmetic(
            f"not arithmetic: {what} ({shown}) is not allowed; use numbers and + - * / // % ** ( )"
        )

    def too_large_for_float(self, node: ast.AST) -> str:
        return (
            f"the result of {self.shown(node)} is too large for a float (over 1.8e308); "
            "use smaller numbers"
        )

    def checked(self, node: ast.BinOp, result: Number | complex) -> Number:
        """The result of one step, refused when it is complex, infinite or too long."""
        if isinstance(result, complex):
            raise NotArithmetic(
                f"the result of {self.shown(node)} is a complex number; the calculator works "
                "with real numbers only (a negative number to a fractional power has no real value)"
            )
        if isinstance(result, float) and not math.isfinite(result):
            raise NotArithmetic(self.too_large_for_float(node))
        if isinstance(result, int) and result.bit_length() > MAX_BITS:
            raise NotArithmetic(
                f"the result of {self.shown(node)} has more than {MAX_BITS:,} bits; {_LIMIT}; "
                "use smaller numbers or split the problem"
            )
        return result


def _estimated_bits(op: ast.operator, left: Number, right: Number) -> float:
    """An upper estimate of the bits of ``left op right`` for integers, before computing it."""
    if not isinstance(left, int) or not isinstance(right, int):
        return 0.0  # floats cannot grow past 1.8e308: they overflow, which is caught
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length()
    if isinstance(op, ast.Pow) and right > 0 and abs(left) > 1:
        if right > MAX_BITS:  # |left| >= 2, so the result has at least `right` bits
            return math.inf
        return right * math.log2(abs(left))
    return max(left.bit_length(), right.bit_length()) + 1.0


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


def arithmetic_answer(text: str) -> str | None:
    """The value of the first arithmetic expression in ``text``, as the calculator
    prints it; ``None`` when the text holds none (or its value is out of range).

    Example:
        >>> arithmetic_answer("What is 12 * 7?"), arithmetic_answer("Name a prime.")
        ('84', None)
    """
    expression = find_expression(text)
    if expression is None:
        return None
    try:
        return format_number(evaluate(expression))
    except NotArithmetic:
        return None
