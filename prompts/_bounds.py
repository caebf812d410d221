"""The bounds of template rendering: a sandbox that cannot run long or grow large.

Jinja's sandbox stops attribute escapes but not cost: ``{{ 'x' * 10**9 }}`` or two
nested ``range(100000)`` loops would exhaust memory or time. ``BoundedSandbox``
charges every loop step, every ``range`` and every filter's input to a per-render
work budget (``MAX_WORK``), refuses ``range`` past ``MAX_RANGE``, and checks the
operators and calls that make big values out of small ones (``*``, ``**``, ``%``,
``~``, padding and width arguments, ``replace``, ``join``, format widths) before
they run. The rendered text is capped at ``MAX_OUTPUT`` by the library.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_OUTPUT = 1024 * 1024
"""The longest rendered prompt, and the longest text or list a template may make."""
MAX_VALUE = 256 * 1024
"""The largest number a template may pass as a width, count or repeat factor."""
MAX_RANGE = 10_000
"""The most items one ``range()`` may have."""
MAX_WORK = 1_000_000
"""Loop steps, ``range`` items and filter input items, in all, per render."""
MAX_POWER_BITS = 10_000
"""The largest integer ``**`` may compute, in bits."""
MAX_SEPARATOR = 256
"""The longest separator ``join`` may repeat between items."""

# a %-format or {}-format width or precision of a million or more
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\d{6,}|\d*\.\d{6,})|\{[^{}]*:[^{}]*\d{6,}[^{}]*\}")


class TemplateTooCostly(Exception):
    """A template went past one of the rendering bounds."""


_work: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "concilium_template_work", default=None
)


@contextmanager
def work_budget() -> Generator[None]:
    """A fresh ``MAX_WORK`` budget for the renders inside the block."""
    token = _work.set([0])
    try:
        yield
    finally:
        _work.reset(token)


def charge(units: int) -> None:
    """Spend ``units`` of the current render's budget (none outside a render)."""
    spent = _work.get()
    if spent is None:
        return
    spent[0] += units
    if spent[0] > MAX_WORK:
        raise TemplateTooCostly(
            f"it takes more than {MAX_WORK} loop steps, range items and filter items "
            "(nested loops?)"
        )


def _size(value: object) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict, set, frozenset)) else 0  # pyright: ignore[reportUnknownArgumentType]


def _check_made(value: object) -> object:
    if _size(value) > MAX_OUTPUT:
        raise TemplateTooCostly(f"it makes a value of more than {MAX_OUTPUT // 1024} K items")
    return value


def _check_numbers(args: Iterable[object]) -> None:
    for arg in args:
        if isinstance(arg, (int, float)) and not isinstance(arg, bool) and abs(arg) > MAX_VALUE:
            raise TemplateTooCostly(f"a number argument {arg!r} is over {MAX_VALUE}")


def _check_format(text: object) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateTooCostly("a format string with a width of a million or more")


def _check_replace(text: object, args: tuple[Any, ...]) -> None:
    if isinstance(text, str) and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], args[1]
        if isinstance(new, str):
            hits = text.count(old) if old else len(text) + 1
            if len(text) + hits * len(new) > MAX_OUTPUT:
                raise TemplateTooCostly(f"replace() would make more than {MAX_OUTPUT // 1024} KiB")


def _check_join(separator: object) -> None:
    if isinstance(separator, str) and len(separator) > MAX_SEPARATOR:
        raise TemplateTooCostly(f"a join separator longer than {MAX_SEPARATOR} characters")


def _check_call(method: str, target: object, args: tuple[Any, ...]) -> None:
    """Checks before a filter or a ``str`` method runs: ``target`` is the value."""
    if method == "replace":
        _check_replace(target, args)
    elif method == "join":
        _check_join(target if isinstance(target, str) else (args[0] if args else ""))
    elif method in ("format", "format_map"):
        _check_format(target)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _bits(value: object) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _bounded_range(*args: int) -> range:
    _check_numbers(args)
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateTooCostly(f"range() of {len(rng)} items (the most is {MAX_RANGE})")
    charge(len(rng))
    return rng


def _bounded_loop(items: Iterable[object]) -> Iterator[object]:
    for item in items:
        charge(1)
        yield item


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        # Filters may take the environment, context or eval context first.
        values = [
            a for a in args if not isinstance(a, (Context, EvalContext, SandboxedEnvironment))
        ]
        target, rest = (values[0], tuple(values[1:])) if values else (None, ())
        charge(_size(target))
        _check_numbers(rest)
        _check_numbers(kwargs.values())
        _check_call(name, target if name != "join" else (rest[0] if rest else ""), rest)
        if name == "format":
            _check_format(target)
        return _check_made(fn(*args, **kwargs))

    return run


class _BoundedCodeGenerator(CodeGenerator):
    """Routes every ``for`` loop's items through ``environment.bounded_loop`` and every
    ``~`` concatenation through ``environment.bounded_text``."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("bounded_loop"), [loop.iter], [], None, None
            )
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_text(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's ``SandboxedEnvironment`` whose renders are bounded in time and size.

    Example:
        >>> from jinja2 import StrictUndefined
        >>> env = BoundedSandbox(undefined=StrictUndefined)
        >>> with work_budget():
        ...     env.from_string("{{ 'ab' * 2 }}").render()
        'abab'
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        globals_ = cast(dict[str, object], self.globals)  # pyright: ignore[reportUnknownMemberType]  # jinja2's dict[str, Any]
        globals_["range"] = _bounded_range
        globals_.pop("lipsum", None)  # makes pages of text from one small number
        self.filters = {name: _bounded_filter(name, fn) for name, fn in self.filters.items()}
        self.bounded_loop = _bounded_loop
        self.bounded_text = _check_made

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(times, int) and _size(seq) * max(times, 0) > MAX_OUTPUT:
                    raise TemplateTooCostly(
                        f"repeating a value of {_size(seq)} items {times} times"
                    )
            if _bits(left) + _bits(right) > MAX_POWER_BITS:
                raise TemplateTooCostly(f"a product of more than {MAX_POWER_BITS} bits")
        elif operator == "**":
            if _bits(left) > 1 and _bits(left) * abs(_int(right)) > MAX_POWER_BITS:
                raise TemplateTooCostly(f"{left} ** {right} is too large a number")
        elif operator == "%":
            _check_format(left)
        return _check_made(super().call_binop(context, operator, left, right))

    def call(
        __self, __context: Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:  # jinja2's signature
        _check_numbers(args)
        _check_numbers(kwargs.values())
        target = getattr(__obj, "__self__", None)
        method = getattr(__obj, "__name__", "")
        wrapped = getattr(__obj, "__wrapped__", None)  # the sandbox's str.format wrapper
        if wrapped is not None:
            target, method = getattr(wrapped, "__self__", None), getattr(wrapped, "__name__", "")
        if isinstance(target, str):
            charge(len(target))
            _check_call(method, target, args)
        return _check_made(super().call(__context, __obj, *args, **kwargs))
