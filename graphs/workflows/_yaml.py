"""YAML to plain data, bounded, remembering the line of every key and item.

PyYAML's composer gives each node its position; walking the node tree instead of
``safe_load`` keeps a ``path -> line`` map so a validation error deep in a workflow
can name the line. Only the safe constructor is used (no Python tags), and a key
given twice is an error instead of silently keeping the last one.

A workflow file is untrusted input, so every cost is bounded before it is paid:
the file is read only if it is a regular file and at most ``MAX_BYTES`` of it;
bytes that are not UTF-8 (or a NUL) are reported with their line; nesting deeper
than ``MAX_DEPTH`` stops the composer; aliases are expanded while walking, at most
``MAX_ALIAS_NODES`` nodes in all (a "billion laughs" fails at once), and an alias
inside its own anchor is refused. Merge keys (``<<``), keys that are mappings or
lists, and explicit tags (``!!python/...``, ``!!str``, ``!custom``) are refused:
a workflow is plain strings, numbers, lists and mappings.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from concilium._errors import WorkflowError

Path = tuple[str | int, ...]

MAX_BYTES = 1024 * 1024
"""The largest workflow file read (1 MiB); real ones are a few KiB."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists."""
MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may expand to, in all, while the data is built."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_FIX = "use plain strings, numbers, lists and mappings"


def read_workflow_text(path: str | os.PathLike[str], file: str) -> str:
    """The text of a workflow file, read without hanging or exhausting memory.

    Only a regular file is read (a FIFO, a device such as ``/dev/zero`` or a folder
    is refused before any byte is read), at most ``MAX_BYTES + 1`` bytes of it; the
    bytes must be UTF-8 without NUL. Every refusal is a ``WorkflowError`` naming the
    file (and the line of a bad byte).

    Example:
        >>> read_workflow_text("/dev/null", "/dev/null")
        Traceback (most recent call last):
        ...
        concilium._errors.WorkflowError: /dev/null: not a regular file (a character device); give the path of a .yaml file
    """
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait for one.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise WorkflowError("no such file; check the path", file=file) from None
    except IsADirectoryError:
        raise WorkflowError("is a folder; give the path of a .yaml file", file=file) from None
    except OSError as exc:
        raise WorkflowError(f"cannot read it: {exc.strerror or exc}", file=file) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise WorkflowError(
                f"not a regular file ({_file_kind(mode)}); give the path of a .yaml file",
                file=file,
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise WorkflowError(f"cannot read it: {exc.strerror or exc}", file=file) from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise WorkflowError(
            f"the file is larger than {MAX_BYTES // 1024} KiB; a workflow file is a few KiB "
            "(keep documents and long prompts in their own files)",
            file=file,
        )
    return decode_workflow_bytes(data, file)


def decode_workflow_bytes(data: bytes, file: str) -> str:
    """UTF-8 bytes to text; a NUL or a byte that is not UTF-8 is an error with its
    line and byte offset."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise WorkflowError(
            f"a NUL byte at byte offset {nul}; a workflow file is text, save it as UTF-8",
            file=file,
            line=data.count(b"\n", 0, nul) + 1,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start}; "
            "save the file as UTF-8",
            file=file,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    return text.removeprefix("\ufeff")


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a plain file"


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader's composer with a depth limit and no explicit tags."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file = file
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark else None
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            raise WorkflowError(
                f"the YAML tag {tag!r} is not allowed; remove it ({_PLAIN_FIX})",
                file=self.file,
                line=line,
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WorkflowError(
                f"nesting deeper than {MAX_DEPTH} levels of mappings and lists; "
                "a workflow needs a handful, flatten the file",
                file=self.file,
                line=line,
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(text: str, file: str) -> yaml.Node | None:
    if len(text) > MAX_BYTES:
        raise WorkflowError(
            f"the text is longer than {MAX_BYTES // 1024} KiB; a workflow file is a few KiB",
            file=file,
        )
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, file)  # the reader checks the characters here
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise WorkflowError(
            f"the control character U+{char:04X} is not allowed in YAML; remove it",
            file=file,
            line=text.count("\n", 0, exc.position) + 1,
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise WorkflowError(
            f"YAML syntax error: {exc.problem or exc}; check the indentation and quoting "
            "around this line",
            file=file,
            line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"YAML error: {exc}", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()


class _Walker:
    """Builds plain data from the node graph, expanding aliases within bounds."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path, int] = {}
        self.constructor = yaml.SafeLoader("")
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.expanded = 0

    def fail(self, message: str, node: yaml.Node) -> WorkflowError:
        return WorkflowError(message, file=self.file, line=node.start_mark.line + 1)

    def walk(self, node: yaml.Node, path: Path, via_alias: bool = False) -> Any:
        ident = id(node)
        if ident in self.active:
            raise self.fail(
                "an alias refers to the mapping or list that contains it (a recursive "
                "alias); copy the values instead",
                node,
            )
        if ident in self.seen:
            via_alias = True  # the composer shares one node between an anchor and its aliases
        self.seen.add(ident)
        if via_alias:
            self.expanded += 1
            if self.expanded > MAX_ALIAS_NODES:
                raise self.fail(
                    f"aliases expand to more than {MAX_ALIAS_NODES} values (an alias bomb?); "
                    "write the values out or use fewer aliases",
                    node,
                )
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            self.active.add(ident)
            try:
                if isinstance(node, yaml.MappingNode):
                    return self.mapping(node, path, via_alias)
                return [self.walk(item, (*path, i), via_alias) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(ident)
        return self.scalar(node)

    def mapping(self, node: yaml.MappingNode, path: Path, via_alias: bool) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            if key in out:
                raise self.fail(
                    f"key {key!r} appears twice in the same mapping; keep one", key_node
                )
            out[key] = self.walk(value_node, (*path, key), via_alias)
            self.lines[(*path, key)] = key_node.start_mark.line + 1
        return out

    def key(self, node: yaml.Node) -> Any:
        if node.tag == _MERGE_TAG:
            raise self.fail(
                "merge keys (<<) are not supported; write the keys out in this mapping", node
            )
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(
                "a key must be a plain name, not a mapping or a list; write it as text", node
            )
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError):
            raise self.fail(
                "a number too large to read (thousands of digits); write a smaller one, or "
                "quote it to make it text",
                node,
            ) from None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self.fail(f"unsupported YAML value: {problem}; {_PLAIN_FIX}", node) from None


def load_yaml(text: str, file: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; returns the data and the 1-based line of each path.

    Example:
        >>> load_yaml("a: [1, 2]", "wf.yaml")
        ({'a': [1, 2]}, {(): 1, ('a',): 1, ('a', 0): 1, ('a', 1): 1})
    """
    root = _compose(text, file)
    if root is None:
        return None, {}
    walker = _Walker(file)
    return walker.walk(root, ()), walker.lines


def line_of(data: Any, lines: dict[Path, int], loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest existing prefix of ``loc`` that has one (pydantic error
    locations contain union tags such as ``'debate'`` that are not in the data; skip
    them; a key an override added has no line, so its parent's is given)."""
    current = data
    path: Path = ()
    found = lines.get(path)
    for part in loc:
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        ):
            current = current[part]
            path = (*path, part)
            found = lines.get(path, found)
    return found
