"""YAML to plain data, remembering the line of every key and item.

PyYAML's composer gives each node its position; walking the node tree instead of
``safe_load`` keeps a ``path -> line`` map so a validation error deep in a workflow
can name the line. Only the safe constructor is used (no Python tags), and a key
given twice is an error instead of silently keeping the last one.
"""

from __future__ import annotations

from typing import Any

import yaml

from concilium._errors import WorkflowError

Path = tuple[str | int, ...]


def load_yaml(text: str, file: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; returns the data and the 1-based line of each path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise WorkflowError(
            f"YAML syntax error: {exc.problem or exc}; check the indentation and quoting "
            "around this line",
            file=file,
            line=line,
        ) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"YAML error: {exc}", file=file) from None
    lines: dict[Path, int] = {}
    constructor = yaml.SafeLoader("")
    if root is None:
        return None, lines

    def walk(node: yaml.Node, path: Path) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if key in out:
                    raise WorkflowError(
                        f"key {key!r} appears twice in the same mapping; keep one",
                        file=file,
                        line=key_node.start_mark.line + 1,
                    )
                out[key] = walk(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise WorkflowError(
                f"unsupported YAML value: {exc.problem}; use plain strings, numbers, lists "
                "and mappings",
                file=file,
                line=node.start_mark.line + 1,
            ) from None

    return walk(root, ()), lines


def line_of(data: Any, lines: dict[Path, int], loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest existing prefix of ``loc`` (pydantic error locations
    contain union tags such as ``'debate'`` that are not in the data; skip them)."""
    current = data
    path: Path = ()
    for part in loc:
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        ):
            current = current[part]
            path = (*path, part)
    return lines.get(path)
