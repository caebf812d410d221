"""The pattern registry: each pattern module registers its workflow spec with the
function that builds it, so the workflow loader dispatches by ``kind`` without
knowing any pattern.

A spec is a pydantic model (``PatternSpec``, ``extra="forbid"``) whose ``kind`` is
a ``Literal``; a slot that holds an agent name or, for nesting, another pattern is
annotated ``AgentSlot``. Slots validate against the union of *every* registered
spec at validation time, so a pattern registered after another one was defined
(a user's, say) nests in the built-ins and the built-ins nest in it.
"""

from __future__ import annotations

import contextvars
import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, TypeVar, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from concilium._errors import WorkflowError
from concilium.agents import Agent
from concilium.prompts import PromptLibrary
from concilium.tools import ToolRegistry

from ._aggregators import AnswerFormat
from ._graph import Graph
from ._runtime import GraphAgent

AnswerSpec = str | dict[str, str]
"""An answer format as a workflow file gives it: a name (``boxed``) or a mapping."""


class PatternSpec(BaseModel):
    """Base of every pattern's workflow spec: ``kind`` picks the pattern.

    Subclasses narrow ``kind`` to one ``Literal`` and add the pattern's fields.

    Example:
        >>> from typing import Literal
        >>> class EchoSpec(PatternSpec):
        ...     kind: Literal["echo"]
        ...     agent: AgentSlot
        >>> EchoSpec(kind="echo", agent="alice").agent
        'alice'
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str | None = None


S = TypeVar("S", bound=PatternSpec)
SlotAgent = Agent | GraphAgent
"""What an agent slot resolves to: an agent, or a nested pattern run as one."""


class Builder(Protocol):
    """What a pattern's build function may use, scoped to that pattern's mapping.

    Every ``*path`` is relative to the pattern (``b.slot(spec.agents[i], "agents", i)``);
    errors raised through it name the file and the line of that path.
    """

    @property
    def name(self) -> str:
        """The pattern's ``name:``, or a default derived from where it sits."""
        ...

    @property
    def prompts(self) -> PromptLibrary:
        """The prompt templates (built-ins and the file's ``prompts_dir``)."""
        ...

    def slot(self, value: str | PatternSpec, *path: str | int) -> SlotAgent:
        """An agent by name, or a nested pattern built and wrapped as an agent."""
        ...

    def optional(self, value: str | PatternSpec | None, *path: str | int) -> SlotAgent | None:
        """``slot`` for a slot that may be empty."""
        ...

    def plain_agent(self, value: str | PatternSpec, *path: str | int, why: str) -> Agent:
        """An agent by name only (a nested pattern is refused, giving ``why``)."""
        ...

    def answer(self, value: AnswerSpec) -> AnswerFormat:
        """The answer format of the pattern's ``answer:`` field."""
        ...

    def template(self, name: str, *path: str | int) -> str:
        """A prompt template name, checked against the library."""
        ...

    def tools(self, names: list[str], *path: str | int) -> ToolRegistry:
        """The named subset of the workflow's tools (``path`` leads to the list)."""
        ...

    def fail(self, message: str, *path: str | int) -> WorkflowError:
        """An error naming the file and the line of ``path``; raise it."""
        ...


BuildFunction = Callable[[Any, Builder], Graph]


@dataclass(frozen=True)
class Registration:
    """A registered pattern: its kind, spec model and build function."""

    kind: str
    spec: type[PatternSpec]
    build: BuildFunction


_REGISTRY: dict[str, Registration] = {}


def spec_kind(spec: type[PatternSpec]) -> str:
    """The one ``Literal`` string of a spec class's ``kind`` field."""
    field = spec.model_fields.get("kind")
    annotation = field.annotation if field else None
    args = get_args(annotation) if get_origin(annotation) is Literal else ()
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(
            f"{spec.__name__}.kind must be one Literal string, e.g. kind: Literal['my_pattern'] (got {annotation!r})"
        )
    return args[0]


def register_pattern(
    spec: type[S],
) -> Callable[[Callable[[S, Builder], Graph]], Callable[[S, Builder], Graph]]:
    """Register ``spec``'s ``kind`` with the decorated build function.

    Args:
        spec: a ``PatternSpec`` subclass whose ``kind`` is a ``Literal`` string.

    Raises:
        ValueError: when the kind is registered already.

    Example:
        >>> from typing import Literal
        >>> class EchoSpec(PatternSpec):
        ...     kind: Literal["echo_doc"]
        ...     agent: AgentSlot
        >>> @register_pattern(EchoSpec)
        ... def build(spec: EchoSpec, b: Builder) -> Graph:
        ...     return Graph(b.name)
        >>> "echo_doc" in pattern_kinds()
        True
    """
    if not (isinstance(spec, type) and issubclass(spec, PatternSpec)):
        raise TypeError(f"register_pattern takes a PatternSpec subclass, not {spec!r}")
    kind = spec_kind(spec)

    def decorator(build: Callable[[S, Builder], Graph]) -> Callable[[S, Builder], Graph]:
        old = _REGISTRY.get(kind)
        if old is not None:
            raise ValueError(
                f"pattern kind {kind!r} is registered already (by {old.spec.__module__}.{old.spec.__name__}); "
                "give your spec another kind"
            )
        _REGISTRY[kind] = Registration(kind, spec, build)
        return build

    return decorator


def pattern_kinds() -> tuple[str, ...]:
    """Every registered kind, in registration order.

    Example:
        >>> isinstance(pattern_kinds(), tuple)
        True
    """
    return tuple(_REGISTRY)


def registered_pattern(kind: str) -> Registration | None:
    """The registration of ``kind``, or None."""
    return _REGISTRY.get(kind)


def pattern_specs() -> tuple[type[PatternSpec], ...]:
    """Every registered spec model, in registration order."""
    return tuple(r.spec for r in _REGISTRY.values())


# -- the union of every registered spec, resolved when a value is validated --------

_UNION_REF = "concilium.PatternSpec"
_in_json_schema = contextvars.ContextVar("_in_json_schema", default=False)
_adapters: dict[tuple[type[PatternSpec], ...], TypeAdapter[Any]] = {}


def _union_schema() -> core_schema.CoreSchema:
    specs = pattern_specs()
    if not specs:
        raise PydanticCustomError(
            "no_patterns", "no pattern is registered; import concilium.graphs.patterns"
        )
    return core_schema.tagged_union_schema(
        {spec_kind(s): s.__pydantic_core_schema__ for s in specs},
        discriminator="kind",
        ref=_UNION_REF,
    )


def _adapter() -> TypeAdapter[Any]:
    specs = pattern_specs()
    adapter = _adapters.get(specs)
    if adapter is None:
        # the union is built at run time from the registry, so it is no static type form
        union: Any = functools.reduce(operator.or_, specs)
        annotated: Any = Annotated
        _adapters.clear()
        adapter = _adapters[specs] = TypeAdapter[Any](
            annotated[union, Field(discriminator="kind")] if len(specs) > 1 else union
        )
    return adapter


class _Nested:
    """Validates against the registry's union at validation time (so late
    registrations count) and describes it once in the JSON Schema as ``$defs/PatternSpec``."""

    def __init__(self, agent_name: bool) -> None:
        self.agent_name = agent_name

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        agent_name = self.agent_name

        def validate(value: Any) -> Any:
            if isinstance(value, PatternSpec) or (agent_name and isinstance(value, str)):
                return value
            if not isinstance(value, dict):
                what = (
                    "an agent name or a pattern (a mapping with kind:)"
                    if agent_name
                    else "a mapping with kind:"
                )
                raise PydanticCustomError("pattern_slot", "expected {what}", {"what": what})
            return _adapter().validate_python(value)

        return core_schema.no_info_plain_validator_function(
            validate, json_schema_input_schema=core_schema.any_schema()
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        ref = core_schema.definition_reference_schema(_UNION_REF)
        if _in_json_schema.get():  # inside the union already: refer to it
            union = handler(ref)
        else:
            token = _in_json_schema.set(True)
            try:
                union = handler(core_schema.definitions_schema(ref, [_union_schema()]))
            finally:
                _in_json_schema.reset(token)
        if not self.agent_name:
            return union
        return {
            "anyOf": [{"type": "string", "description": "an agent name (a key of agents:)"}, union]
        }


AgentSlot = Annotated[str | PatternSpec, _Nested(agent_name=True)]
"""A spec field that holds an agent's name or a nested pattern of any registered kind."""

AnyPatternSpec = Annotated[PatternSpec, _Nested(agent_name=False)]
"""A spec field that holds a pattern of any registered kind (``workflow:``)."""
