"""Typed tools and the registry that names them.

A tool is a Python function, sync or async. Its argument schema is built from its
type hints with pydantic, and that JSON Schema is what a model sees (OpenAI tool
format). A sync tool runs in a worker thread, so it never blocks the event loop;
every tool has a timeout; ``side_effects`` and ``idempotent`` tell the executor
whether a call may be repeated. Workflow files name tools from a registry only:
nothing is ever imported from a string.

Example:
    >>> registry = ToolRegistry()
    >>> @registry.tool(timeout=5)
    ... def add(a: int, b: int) -> int:
    ...     "Add two integers."
    ...     return a + b
    >>> import asyncio
    >>> asyncio.run(registry.call("add", {"a": 2, "b": "3"}))
    5
    >>> registry.schemas()[0]["function"]["parameters"]["required"]
    ['a', 'b']
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from concilium._errors import RunError, UserError


class ToolError(RunError):
    """A tool call failed: unknown tool, bad arguments, timeout, or the tool raised.
    The message is written for the model (or planner) that made the call."""


@dataclass(frozen=True)
class Tool:
    """One tool: its function, argument model and execution flags."""

    name: str
    fn: Callable[..., Any]
    description: str
    args: type[BaseModel]
    timeout: float = 30.0
    side_effects: bool = False
    idempotent: bool = True
    params: tuple[str, ...] = field(default=())

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = 30.0,
        side_effects: bool = False,
        idempotent: bool | None = None,
    ) -> Tool:
        """Build a tool from a function's signature, type hints and docstring."""
        signature = inspect.signature(fn)
        hints = inspect.get_annotations(fn, eval_str=True)
        fields: dict[str, Any] = {}
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise UserError(
                    f"tool {fn.__name__}: *args and **kwargs cannot be described to a model"
                )
            if param.name not in hints:
                raise UserError(f"tool {fn.__name__}: parameter {param.name!r} needs a type hint")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], default)
        tool_name = name or fn.__name__
        model = create_model(f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields)
        return cls(
            name=tool_name,
            fn=fn,
            description=description or inspect.getdoc(fn) or tool_name,
            args=model,
            timeout=timeout,
            side_effects=side_effects,
            idempotent=(not side_effects) if idempotent is None else idempotent,
            params=tuple(fields),
        )

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        parameters = self.args.model_json_schema()
        parameters.pop("title", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }

    def bind(
        self, positional: Sequence[Any] = (), keywords: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Positional and keyword arguments -> the argument dict (arity checked)."""
        keywords = dict(keywords or {})
        if len(positional) > len(self.params):
            raise ToolError(
                f"{self.name} takes {len(self.params)} argument(s) ({', '.join(self.params)}), got {len(positional)}"
            )
        for name, value in zip(
            self.params, positional, strict=False
        ):  # fewer positional than params
            if name in keywords:
                raise ToolError(f"{self.name}: argument {name!r} given twice")
            keywords[name] = value
        unknown = sorted(set(keywords) - set(self.params))
        if unknown:
            raise ToolError(
                f"{self.name} has no argument(s) {unknown}; its arguments are {list(self.params)}"
            )
        return keywords

    async def __call__(self, arguments: Mapping[str, Any]) -> Any:
        try:
            values = self.args.model_validate(dict(arguments))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolError(f"bad arguments for {self.name}: {problems}") from None
        kwargs = {name: getattr(values, name) for name in self.params}
        try:
            if inspect.iscoroutinefunction(self.fn):
                return await asyncio.wait_for(self.fn(**kwargs), self.timeout)
            return await asyncio.wait_for(asyncio.to_thread(self.fn, **kwargs), self.timeout)
        except TimeoutError:
            raise ToolError(f"{self.name} did not finish within {self.timeout:g} s") from None
        except ToolError:
            raise
        except Exception as exc:  # the tool's own failure, reported to the model
            raise ToolError(f"{self.name} failed: {type(exc).__name__}: {exc}") from exc


class ToolRegistry:
    """Named tools. ``registry.tool`` is a decorator; ``call`` validates and runs."""

    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise UserError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a tool (``@registry.tool`` or ``@registry.tool(timeout=5)``)."""
        if fn is not None:
            self.add(Tool.from_function(fn, **options))
            return fn

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(Tool.from_function(f, **options))
            return f

        return register

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            close = difflib.get_close_matches(name, self._tools, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ToolError(f"there is no tool {name!r}.{hint} Tools: {sorted(self._tools)}")
        return tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        return ToolRegistry(self.get(n) for n in names)

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self._tools.values()]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        return await self.get(name)(arguments)
