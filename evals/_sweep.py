"""Sweeps: ``--set workflow.samples=1,4,16`` turns workflow files into a grid of methods.

Each ``--set`` names a dotted path in the workflow file's YAML mapping and a comma list of
values; the grid is their product, applied to the parsed mapping *before* validation, so
the workflow schema checks every combination. Each method is named after the workflow and
its settings, e.g. ``self_consistency[samples=4]``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from concilium._errors import UserError
from concilium.graphs.workflows import Workflow, build_workflow, load_yaml, parse_workflow

__all__ = ["Setting", "Method", "parse_setting", "build_methods"]


@dataclass(frozen=True)
class Setting:
    """One ``--set``: a dotted path into the workflow mapping and the values to try."""

    path: tuple[str, ...]
    values: tuple[object, ...]

    @property
    def label(self) -> str:
        return self.path[-1]


@dataclass(frozen=True)
class Method:
    """A workflow with one combination of settings applied, ready to run."""

    name: str
    workflow: Workflow


def _scalar(text: str) -> object:
    """``4`` -> 4, ``0.5`` -> 0.5, ``true`` -> True, anything else stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def parse_setting(text: str) -> Setting:
    """Read ``key.path=v1,v2``.

    Example:
        >>> parse_setting("workflow.samples=1,4")
        Setting(path=('workflow', 'samples'), values=(1, 4))
    """
    key, sep, values = text.partition("=")
    path = tuple(part for part in key.strip().split(".") if part)
    if not sep or not path or not values.strip():
        raise UserError(
            f"--set {text!r}: write key.path=value1,value2 (e.g. workflow.samples=1,4,16)"
        )
    parsed = tuple(_scalar(v.strip()) for v in values.split(",") if v.strip())
    return Setting(path, parsed)


def _apply(data: dict[str, Any], setting: Setting, value: object, file: str) -> None:
    node: Any = data
    for depth, part in enumerate(setting.path[:-1]):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(setting.path[:depth]) or "the file"
            fields = sorted(node) if isinstance(node, Mapping) else []
            raise UserError(
                f"{file}: --set {'.'.join(setting.path)}: no key {part!r} in {where}; "
                f"the keys there are {', '.join(map(str, fields)) or '(none)'}"
            )
        node = node[part]
    if not isinstance(node, dict):
        raise UserError(
            f"{file}: --set {'.'.join(setting.path)}: "
            f"{'.'.join(setting.path[:-1])} is not a mapping, so it has no fields to set"
        )
    node[setting.path[-1]] = value


MAX_WORKFLOW_BYTES = 1024 * 1024


def _read(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: no such workflow file")
    if path.stat().st_size > MAX_WORKFLOW_BYTES:
        raise UserError(f"{path}: over {MAX_WORKFLOW_BYTES} bytes; a workflow file is small")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the workflow file as UTF-8") from None


def _method_name(base: str, settings: Sequence[Setting], combo: Sequence[object]) -> str:
    if not settings:
        return base
    return f"{base}[{','.join(f'{s.label}={v}' for s, v in zip(settings, combo, strict=True))}]"


def build_methods(
    files: Sequence[str | Path],
    settings: Sequence[Setting] = (),
    *,
    api_base: str | Sequence[str] | None = None,
) -> list[Method]:
    """Load each workflow file once per combination of ``settings``.

    Raises:
        UserError: a path names no field (the message lists those that exist).
        WorkflowError: a combination is not a valid workflow (file:line).

    Example:
        >>> # build_methods(["sc.yaml"], [parse_setting("workflow.samples=1,4")])
    """
    methods: list[Method] = []
    grid = list(itertools.product(*(s.values for s in settings)))
    for path in files:
        file = str(path)
        text = _read(Path(path))
        data, _ = load_yaml(text, file)
        if not isinstance(data, dict):
            parse_workflow(text, file)  # raises the loader's own error
            raise UserError(f"{file}: a workflow file must be a mapping")
        for combo in grid:
            changed: dict[str, Any] = copy.deepcopy(data)
            for setting, value in zip(settings, combo, strict=True):
                _apply(changed, setting, value, file)
            spec, raw, lines = parse_workflow(yaml.safe_dump(changed, sort_keys=False), file)
            workflow = build_workflow(
                spec,
                file=file,
                lines=lines,
                data=raw,
                api_base=api_base,
                base_dir=Path(file).parent,
            )
            methods.append(Method(_method_name(spec.name, settings, combo), workflow))
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(
            f"two methods are named {duplicates[0]!r}; give each workflow file its own name: field"
        )
    return methods
