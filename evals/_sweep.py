"""Sweeps: ``--set workflow.samples=1,4,16`` turns workflow files into a grid of methods.

Each ``--set`` names a dotted path in the workflow file's YAML mapping and a comma list of
values; the grid is their product, each combination applied as overrides when the
workflow is built (``concilium.app.load``), before validation, so the workflow schema
checks every combination and the values swept are the values run. Each method is named after the workflow and
its settings, e.g. ``self_consistency[samples=4]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from concilium._errors import UserError
from concilium.app import parse_override
from concilium.graphs.workflows import Workflow

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
    # each value read as one override of the path reads it (4 -> 4, true -> True)
    parsed = tuple(parse_override(f"{key}={v}").value for v in values.split(",") if v.strip())
    return Setting(path, parsed)


def _method_name(base: str, settings: Sequence[Setting], combo: Sequence[object]) -> str:
    if not settings:
        return base
    return f"{base}[{','.join(f'{s.label}={v}' for s, v in zip(settings, combo, strict=True))}]"


def build_methods(files: Sequence[str | Path], settings: Sequence[Setting] = ()) -> list[Method]:
    """Build each workflow (a file, or your ``app.py:graph``) once per combination of
    ``settings``, through ``concilium.app.load``: the values swept are the values run.

    Raises:
        UserError: a path names no field (the message lists those that exist), or a
            sweep over a Python graph (it takes its values in code).
        WorkflowError: a combination is not a valid workflow (file:line).

    Example:
        >>> methods = build_methods(
        ...     ["examples/self_consistency.yaml"], [parse_setting("workflow.samples=1,4")]
        ... )
        >>> [(m.name, m.workflow.spec.workflow.samples) for m in methods]
        [('self_consistency[samples=1]', 1), ('self_consistency[samples=4]', 4)]
    """
    from concilium.app import Override, load

    methods: list[Method] = []
    grid = list(itertools.product(*(s.values for s in settings)))
    for path in files:
        for combo in grid:
            changes = [Override(s.path, v) for s, v in zip(settings, combo, strict=True)]
            workflow = load(path, overrides=changes)
            methods.append(Method(_method_name(workflow.name, settings, combo), workflow))
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"two methods are named {duplicates[0]!r}; give each workflow its own name")
    return methods
