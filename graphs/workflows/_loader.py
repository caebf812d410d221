"""Workflow files: load, check and build them into a ``Graph``.

Every mistake becomes a ``WorkflowError`` naming the file, the line and the fix, with
"did you mean" for misspelt fields, kinds, agents, models, prompts and answer
formats. Names resolve through registries (patterns, output schemas, prompt
templates), never through ``importlib``; no value from the file reaches ``eval``.
The pattern under ``workflow:`` is built by the function its module registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from concilium._errors import PromptError, WorkflowError
from concilium.agents import Agent, Budget, Endpoints, ModelSpec
from concilium.agents.sim import SimConfig
from concilium.graphs import Graph
from concilium.graphs._registry import pattern_kinds
from concilium.prompts import PromptLibrary
from concilium.tools import ToolRegistry

from ._builder import Loc, PatternBuilder, agent_from_entry, model_from_entry, suggest, tools_for
from ._spec import WorkflowSpec, all_field_names, spec_models
from ._yaml import line_of, load_yaml, read_workflow_text


def _fields_for(siblings: Iterable[str]) -> set[str]:
    """The fields of the spec model that best explains the keys next to a typo."""
    keys = set(siblings)
    best = max(spec_models(), key=lambda m: len(keys & set(m.model_fields)))
    return set(best.model_fields) if keys & set(best.model_fields) else all_field_names()


def _format_error(err: Mapping[str, Any], data: Any) -> str:
    kind = err["type"]
    kinds = pattern_kinds()
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in kinds)]
    where = ".".join(str(p) for p in loc) or "(top level)"
    if kind == "extra_forbidden":
        bad = str(loc[-1]) if loc else "?"
        parent = _at(data, loc[:-1])
        siblings = [k for k in parent if k != bad] if isinstance(parent, dict) else []
        return f"unknown field {bad!r}.{suggest(bad, _fields_for(siblings))} Remove it or fix its spelling."
    if kind == "missing":
        return f"{where}: this field is required; add it."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = (err.get("ctx") or {}).get("tag", "")
        if kind == "union_tag_not_found":
            return f"{where}: a pattern needs 'kind:', one of {sorted(kinds)}."
        return f"{where}: unknown kind {tag!r}.{suggest(tag, kinds)} Known kinds: {sorted(kinds)}."
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return f"{where}: {err['msg']} (got {shown})."


def _at(data: Any, loc: Iterable[Any]) -> Any:
    for part in loc:
        if (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        ):
            data = data[part]
    return data


@dataclass
class Workflow:
    """A built workflow: its spec (``None`` for a Python graph), deployments, agents, and
    the graph. Built once; :meth:`bind` points its model calls elsewhere in memory.

    Attributes:
        endpoints: where its model calls go once bound (``None``: each model's own
            ``api_base``); ``graph`` is then the graph served there.
    """

    spec: WorkflowSpec | None
    graph: Graph
    models: dict[str, ModelSpec] = field(default_factory=dict[str, ModelSpec])
    agents: dict[str, Agent] = field(default_factory=dict[str, Agent])
    file: str = "<workflow>"
    budget: Budget | None = None
    sim: SimConfig | None = field(default=None, repr=False)
    lines: dict[Any, int] = field(default_factory=dict[Any, int], repr=False)
    endpoints: Endpoints | None = field(default=None, repr=False)

    @classmethod
    def of_graph(cls, graph: Graph, source: str = "<python>") -> Workflow:
        """A Python graph as a workflow (no spec: no file fields to override or show)."""
        return cls(None, graph, file=source)

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else self.graph.name

    @property
    def kind(self) -> str:
        """The pattern under ``workflow:`` (``graph`` for a Python graph)."""
        return self.spec.workflow.kind if self.spec is not None else "graph"

    @property
    def description(self) -> str:
        described = self.spec.description if self.spec is not None else None
        return described or f"the concilium workflow {self.name!r} ({self.kind})"

    @property
    def fingerprint(self) -> str | None:
        """What identifies it for resume checks: its spec (a file's values and overrides,
        not where it is served), or ``None`` for a Python graph (its structure is used)."""
        if self.spec is None:
            return None
        return json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)

    def bind(self, endpoints: Endpoints | None) -> Workflow:
        """This workflow with its model calls sent to ``endpoints``: the same agents,
        tools and graph, nothing rebuilt or read again.

        Example:
            >>> from concilium.agents import Endpoints
            >>> from concilium.graphs import Graph
            >>> wf = Workflow.of_graph(Graph("g"))
            >>> wf.bind(Endpoints("http://127.0.0.1:9/v1")).graph.endpoints.api_base
            ('http://127.0.0.1:9/v1',)
        """
        return replace(self, graph=self.graph.served_at(endpoints), endpoints=endpoints)


def parse_workflow(text: str, file: str = "<workflow>") -> tuple[WorkflowSpec, Any, dict[Any, int]]:
    """YAML text -> validated ``WorkflowSpec`` (plus the raw data and line map)."""
    data, lines = load_yaml(text, file)
    return validate_workflow(data, lines, file), data, lines


def validate_workflow(data: Any, lines: dict[Any, int], file: str = "<workflow>") -> WorkflowSpec:
    """A workflow file's parsed YAML (``load_yaml``) -> ``WorkflowSpec``; errors name the
    file and line (a value changed in memory keeps the line of its key)."""
    if not isinstance(data, dict):
        raise WorkflowError(
            "a workflow file must be a mapping with name, models, agents and workflow",
            file=file,
            line=1,
        )
    _check_pattern_depth(data.get("workflow"), ("workflow",), lines, file)
    _check_text(data, lines, file)
    _check_agent_names(data.get("agents"), lines, file)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Report the first error by position in the file; union members often
        # produce several errors for one mistake, the first line is the real one.
        first = min(errors, key=lambda e: line_of(data, lines, e["loc"]) or 0)
        loc = first["loc"]
        if first["type"] == "union_tag_invalid":
            loc = (*loc, "kind")  # point at the kind: line, not the mapping
        raise WorkflowError(
            _format_error(first, data), file=file, line=line_of(data, lines, loc)
        ) from None
    return spec


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(data: Any, lines: dict[Any, int], file: str) -> None:
    """Refuse a key or value holding a lone surrogate (a ``"\\ud800"`` escape in the
    file, or an argument that was not UTF-8): it is not a character, and writing it
    anywhere as UTF-8 (a header, a file, a type name) fails mid-run."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                stack += [(key, (*path, key)), (item, (*path, key))]
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, str):
            bad = _SURROGATE.search(value)
            if bad:
                where = ".".join(map(str, path)) or "a key at the top level"
                raise WorkflowError(
                    f"{where}: the text holds U+{ord(bad.group()):04X}, a lone surrogate, which "
                    "is not a character (it cannot be written as UTF-8); write the character "
                    "itself, or escape one past U+FFFF with 8 digits (\\U0001F600), not as a "
                    "pair of \\u escapes",
                    file=file,
                    line=line_of(data, lines, path),
                )


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_agent_names(agents: Any, lines: dict[Any, int], file: str) -> None:
    """An agent's name goes into each request's header, where a line break or
    another control character is refused mid-run."""
    for name in agents if isinstance(agents, dict) else ():
        bad = _CONTROL.search(name) if isinstance(name, str) else None
        if bad:
            raise WorkflowError(
                f"agents: the name {name!r} holds the control character U+{ord(bad.group()):04X}; "
                "an agent's name is sent with each request, use letters, digits, spaces and "
                "punctuation",
                file=file,
                line=lines.get(("agents", name)),
            )


MAX_PATTERN_DEPTH = 16
"""Patterns nested in patterns, at most (each level multiplies the calls)."""


def _check_pattern_depth(
    value: Any, path: tuple[Any, ...], lines: dict[Any, int], file: str, depth: int = 0
) -> None:
    """Refuse patterns nested deeper than ``MAX_PATTERN_DEPTH`` before validating."""
    if isinstance(value, dict):
        if "kind" in value:
            depth += 1
            if depth > MAX_PATTERN_DEPTH:
                raise WorkflowError(
                    f"patterns nested more than {MAX_PATTERN_DEPTH} deep; every level "
                    "multiplies the calls, nest fewer patterns",
                    file=file,
                    line=lines.get(path),
                )
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        _check_pattern_depth(item, (*path, key), lines, file, depth)


def load_workflow(
    path: str | Path,
    *,
    api_base: str | Sequence[str] | None = None,
    tools: ToolRegistry | None = None,
) -> Workflow:
    """Read, validate and build a workflow file.

    Args:
        path: the YAML file.
        api_base: serve every model from this OpenAI-compatible URL instead
            (the CLI's ``--backend URL`` and ``--backend sim``).
        tools: your own tools, which the file may then name (besides the built-ins).

    Example:
        >>> # wf = load_workflow("examples/debate.yaml"); run_sync(wf.graph, "What is 12 * 7?")
    """
    file = str(path)
    text = read_workflow_text(path, file)  # bounded: regular files, 1 MiB, UTF-8
    spec, data, lines = parse_workflow(text, file)
    return build_workflow(spec, file=file, lines=lines, data=data, api_base=api_base, tools=tools)


def build_workflow(
    spec: WorkflowSpec,
    *,
    file: str = "<workflow>",
    lines: dict[Any, int] | None = None,
    data: Any = None,
    api_base: str | Sequence[str] | None = None,
    base_dir: Path | None = None,
    tools: ToolRegistry | None = None,
) -> Workflow:
    """Resolve names and build the graph of a validated spec."""
    lines = lines or {}

    def fail(message: str, loc: Loc) -> WorkflowError:
        return WorkflowError(message, file=file, line=line_of(data, lines, loc) if data else None)

    base = base_dir or (Path(file).parent if file != "<workflow>" else Path("."))
    prompts = PromptLibrary([base / spec.prompts_dir] if spec.prompts_dir else [])
    if spec.prompts_dir and not (base / spec.prompts_dir).is_dir():
        raise fail(
            f"prompts_dir {spec.prompts_dir!r} is not a folder next to the file", ("prompts_dir",)
        )
    if spec.prompts_dir:  # the file's own templates are checked now, not mid-run
        folder = base / spec.prompts_dir
        for template in sorted(folder.rglob("*.j2")):
            try:
                prompts.check(str(template.relative_to(folder).with_suffix("")))
            except PromptError as exc:
                raise fail(str(exc), ("prompts_dir",)) from None

    models = {
        name: model_from_entry(name, entry, api_base, fail) for name, entry in spec.models.items()
    }
    agents = {
        name: agent_from_entry(name, entry, models, prompts, fail)
        for name, entry in spec.agents.items()
    }
    registry = tools_for(
        spec.tools.documents if spec.tools else None,
        base,
        tools,
        fail,
        mcp=spec.tools.mcp if spec.tools else None,
    )
    graph = PatternBuilder(agents, prompts, fail, registry).pattern(
        spec.workflow, ("workflow",), spec.name
    )
    budget = (
        Budget(
            spec.budget.max_calls,
            spec.budget.max_tokens,
            spec.budget.max_tool_calls,
            count_samples=spec.budget.count_samples,
        )
        if spec.budget
        else None
    )
    return Workflow(spec, graph, models, agents, file, budget, spec.simulate, lines)
