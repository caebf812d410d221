"""Workflow sources: a YAML file, a spec, or a Python graph, plus dotted overrides,
built **once** into a ``Workflow``.

A target names the user's own code the way uvicorn's ``module:app`` does:
``my_graphs.py:review`` or ``package.module:review`` is imported (it is the user's
code, named on their command line); a name in a workflow file or from a model never
is. Anything else is a workflow file. Overrides (``workflow.samples=3``) change the
parsed file before it is validated, so the schema checks the result and an error
still names the file and line.

Example:
    >>> from concilium.app import load, parse_override
    >>> wf = load(
    ...     "examples/self_consistency.yaml", overrides=[parse_override("workflow.samples=3")]
    ... )
    >>> wf.spec.workflow.samples
    3
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from concilium._errors import UserError
from concilium.graphs import Graph
from concilium.graphs.workflows import (
    Workflow,
    WorkflowSpec,
    build_workflow,
    load_yaml,
    read_workflow_text,
    validate_workflow,
)
from concilium.tools import ToolRegistry

__all__ = ["Override", "load", "parse_override"]

Target = str | Path | Graph | Workflow | WorkflowSpec | Mapping[str, Any]
_PYTHON_TARGET = re.compile(r"^(?P<module>[^:]+\.py|[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class Override:
    """One dotted field of a workflow file and its new value: ``workflow.samples=3``."""

    path: tuple[str, ...]
    value: object

    @property
    def text(self) -> str:
        return f"{'.'.join(self.path)}={self.value}"


def _scalar(text: str) -> object:
    """``4`` -> 4, ``0.5`` -> 0.5, ``true`` -> True, anything else stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def parse_override(text: str) -> Override:
    """Read ``key.path=value`` (the value as YAML reads a scalar).

    Example:
        >>> parse_override("workflow.temperature=0.5")
        Override(path=('workflow', 'temperature'), value=0.5)
    """
    key, sep, value = text.partition("=")
    path = tuple(part for part in key.strip().split(".") if part)
    if not sep or not path or not value.strip():
        raise UserError(f"{text!r}: write key.path=value, e.g. workflow.samples=3")
    return Override(path, _scalar(value.strip()))


def _overrides(given: Iterable[Override] | Mapping[str, object]) -> list[Override]:
    if isinstance(given, Mapping):
        return [Override(tuple(str(k).split(".")), v) for k, v in given.items()]
    return list(given)


def apply_override(data: dict[str, Any], override: Override, file: str) -> None:
    """Set one dotted field in a parsed workflow mapping; a missing parent is an error
    that lists the keys there (a misspelt leaf is the schema's to name)."""
    node: Any = data
    shown = ".".join(override.path)
    for depth, part in enumerate(override.path[:-1]):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(override.path[:depth]) or "the file"
            fields = sorted(map(str, node)) if isinstance(node, Mapping) else []
            raise UserError(
                f"{file}: {shown}: no key {part!r} in {where}; "
                f"the keys there are {', '.join(fields) or '(none)'}"
            )
        node = node[part]
    if not isinstance(node, dict):
        raise UserError(
            f"{file}: {shown}: {'.'.join(override.path[:-1])} is not a mapping, "
            "so it has no fields to set"
        )
    node[override.path[-1]] = override.value


def load(
    target: Target,
    *,
    overrides: Iterable[Override] | Mapping[str, object] = (),
    tools: ToolRegistry | None = None,
    base_dir: str | Path | None = None,
) -> Workflow:
    """Build a workflow once from a file, a spec or a Python graph.

    Args:
        target: a workflow file; ``file.py:name`` or ``package.module:name`` naming a
            ``Graph`` or ``Workflow`` in your own code; or a ``Graph``, ``Workflow``,
            ``WorkflowSpec`` or the mapping a workflow file holds.
        overrides: dotted fields and values applied before validation
            (``{"workflow.samples": 3}`` or ``parse_override`` values).
        tools: your own tools, which the file may then name.
        base_dir: the folder the file's relative paths (``prompts_dir``,
            ``tools.documents``) are read from; default the file's own folder.

    Raises:
        UserError: a target that names nothing loadable, or overrides on a Python graph.
        WorkflowError: the file (with the overrides applied) is not a valid workflow.
    """
    changes = _overrides(overrides)
    if isinstance(target, Workflow | Graph):
        if changes:
            raise UserError(
                f"overrides ({', '.join(o.text for o in changes)}) apply to workflow files and "
                "specs; a Python graph takes its values in code"
            )
        return target if isinstance(target, Workflow) else Workflow.of_graph(target)
    if isinstance(target, WorkflowSpec | Mapping):
        data = (
            target.model_dump(mode="json", exclude_none=True)
            if isinstance(target, WorkflowSpec)
            else dict(target)
        )
        return _build(data, {}, "<workflow>", changes, tools, Path(base_dir or "."))
    text = str(target)
    match = _PYTHON_TARGET.match(text)
    if match and not Path(text).exists():
        return load(_python_target(match["module"], match["attr"]), overrides=changes)
    raw = read_workflow_text(text, text)  # bounded: regular files, 1 MiB, UTF-8
    data, lines = load_yaml(raw, text)
    return _build(data, lines, text, changes, tools, Path(base_dir or Path(text).parent))


def _build(
    data: Any,
    lines: dict[Any, int],
    file: str,
    changes: list[Override],
    tools: ToolRegistry | None,
    base: Path,
) -> Workflow:
    if changes and isinstance(data, dict):
        data = copy.deepcopy(data)
        for change in changes:
            apply_override(data, change, file)
    spec = validate_workflow(data, lines, file)
    return build_workflow(spec, file=file, lines=lines, data=data, base_dir=base, tools=tools)


def _python_target(module: str, attr: str) -> Graph | Workflow:
    """Import the user's ``module`` (a ``.py`` file or a dotted name) and take ``attr``."""
    where = f"{module}:{attr}"
    try:
        if module.endswith(".py"):
            path = Path(module)
            if not path.is_file():
                raise UserError(f"{where}: no such Python file {module!r}")
            spec = importlib.util.spec_from_file_location(f"_concilium_user_.{path.stem}", path)
            if spec is None or spec.loader is None:
                raise UserError(f"{where}: {module!r} cannot be imported as Python")
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # as uvicorn does: modules of the cwd
            loaded = importlib.import_module(module)
    except UserError:
        raise
    except Exception as exc:  # the user's module failed while importing
        raise UserError(
            f"{where}: importing {module} failed: {type(exc).__name__}: {exc}"
        ) from None
    value = getattr(loaded, attr, None)
    if not isinstance(value, Graph | Workflow):
        found = "nothing" if value is None else f"a {type(value).__name__}"
        raise UserError(
            f"{where}: {attr!r} in {module} is {found}; name a concilium Graph (a pattern such as "
            "debate(...), or your own Graph) or a Workflow"
        )
    return value
