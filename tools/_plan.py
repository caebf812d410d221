"""Plans of tool calls: the LLMCompiler text format, read line by line as it streams,
and a JSON task list. Both become ``Task`` objects whose arguments may hold
references to earlier tasks' results.

Text format (``docs/methods.md#plan-and-execute``)::

    Thought: optional, applies to the next action
    1. search("Arthur's Magazine")
    2. search(query="First for Women")
    3. calculator("$1 / ${2}")
    4. join()<END_OF_PLAN>

Arguments are read with a literal parser only (``ast.literal_eval`` on each
argument node): strings, numbers, lists, dicts, tuples, True/False/None, and
references. A reference is ``$N`` or ``${N}`` written bare or as a whole string
(``search($1)``, ``["$1"]``): it is replaced by task N's result itself. Inside a
longer string, ``$N`` is replaced by the result's text, but only when N is an
earlier task of the plan, so a literal "$10" survives. A line that cannot be read,
an unknown tool, arguments that do not fit, and references to a task that is not
earlier are ``PlanError``\\ s that say which line and what to write instead; nothing
is dropped silently.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from concilium._errors import RunError
from concilium._json import JsonBoundsError, check_depth

from ._registry import ToolError, ToolRegistry

END_OF_PLAN = "<END_OF_PLAN>"
JOIN = "join"
# A tool name: letters, digits, _, - and . (what MCP allows: get-sum, files.read).
_ACTION = re.compile(r"^\s*(\d+)\s*\.\s*([\w.-]+)\s*\((.*)\)\s*$", re.S)
_ACTION_START = re.compile(r"^\s*\d+\s*\.\s*[\w.-]+\s*\(")
_THOUGHT = re.compile(r"^\s*Thought\s*:\s*(.*)$", re.I)
_REF = re.compile(r"\$\{?(\d+)\}?")
_WHOLE_REF = re.compile(r"^\s*\$\{?(\d+)\}?\s*$")
_EMBEDDED_REF = r"(?<![\w$])\$\{{?{n}\}}?(?!\.?\d)"
_SENTINEL = "\x00ref:{}\x00"
_SENTINEL_RE = re.compile("^\x00ref:(\\d+)\x00$")


class PlanError(RunError, ValueError):
    """A plan the executor cannot run. ``line`` is the plan line (1-based) if known."""

    def __init__(self, message: str, line: int | None = None, text: str | None = None):
        self.line = line
        self.text = text
        where = (
            f"plan line {line}" + (f" ({text.strip()!r})" if text else "") + ": " if line else ""
        )
        super().__init__(where + message)


@dataclass(frozen=True)
class Ref:
    """The result of task ``index``."""

    index: int


@dataclass
class Task:
    """One planned tool call."""

    index: int
    tool: str
    args: dict[str, Any] = field(default_factory=dict[str, Any])
    deps: tuple[int, ...] = ()
    thought: str | None = None
    line: int | None = None

    @property
    def is_join(self) -> bool:
        return self.tool == JOIN


def resolve(value: Any, results: Mapping[int, Any], deps: Iterable[int]) -> Any:
    """Substitute references in ``value`` with ``results`` (structurally).

    Example:
        >>> resolve({"a": Ref(1), "b": "cost $1 (not $10)"}, {1: 42}, [1])
        {'a': 42, 'b': 'cost 42 (not $10)'}
    """
    if isinstance(value, Ref):
        return results[value.index]
    if isinstance(value, str):
        for n in deps:
            value = re.sub(_EMBEDDED_REF.format(n=n), lambda _m, n=n: str(results[n]), value)
        return value
    if isinstance(value, list):
        return [resolve(v, results, deps) for v in cast("list[Any]", value)]
    if isinstance(value, tuple):
        return tuple(resolve(v, results, deps) for v in cast("tuple[Any, ...]", value))
    if isinstance(value, dict):
        return {k: resolve(v, results, deps) for k, v in cast("dict[Any, Any]", value).items()}
    return value


def _hide_bare_refs(text: str) -> str:
    """Replace ``$N`` outside string literals with a sentinel string literal."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        else:
            match = _REF.match(text, i) if ch == "$" else None
            if match:
                out.append(repr(_SENTINEL.format(match.group(1))))
                i = match.end()
                continue
            out.append(ch)
        i += 1
    return "".join(out)


def _references(
    value: Any, index: int, earlier: set[int], line: int | None, text: str | None
) -> tuple[Any, set[int]]:
    """Turn sentinel and whole-string references into ``Ref``; collect dependencies."""
    deps: set[int] = set()

    def check(n: int) -> None:
        if n not in earlier:
            what = "a later task" if n >= index else "not a task of this plan"
            raise PlanError(
                f"task {index} refers to ${n}, which is {what}; refer only to earlier tasks",
                line,
                text,
            )
        deps.add(n)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            whole = _SENTINEL_RE.match(v) or _WHOLE_REF.match(v)
            if whole:
                check(int(whole.group(1)))
                return Ref(int(whole.group(1)))
            for m in _REF.finditer(v):  # embedded: a reference only if it names an earlier task
                if int(m.group(1)) in earlier and re.search(_EMBEDDED_REF.format(n=m.group(1)), v):
                    deps.add(int(m.group(1)))
            return v
        if isinstance(v, list):
            return [walk(x) for x in cast("list[Any]", v)]
        if isinstance(v, tuple):
            return tuple(walk(x) for x in cast("tuple[Any, ...]", v))
        if isinstance(v, dict):
            return {k: walk(x) for k, x in cast("dict[Any, Any]", v).items()}
        return v

    return walk(value), deps


_AROUND_THE_CALL: dict[type[ast.AST], str] = {
    ast.Attribute: "an attribute after the call",
    ast.Call: "a second call on the result",
    ast.Subscript: "a subscript after the call",
    ast.Tuple: "a comma and another expression after the call",
}


def _one_call(hidden: str, line: int | None, raw: str | None) -> ast.Call:
    """``_(<hidden>)`` parsed, if it is exactly one call and nothing else.

    The line's arguments are cut from between its first ``(`` and its last ``)``, so a
    line such as ``search("a").x()`` or ``search("a"), 2`` reaches here as arguments
    that close the call early; those must be refused, never read as a different call.
    """
    source = f"_({hidden})"
    try:
        node = ast.parse(source, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise PlanError(
            "the arguments are not valid; write exactly one call per line with literal "
            'arguments, like search("words", 3) or f(x=$1)',
            line,
            raw,
        ) from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
        if node.end_col_offset == len(source.encode()):
            return node
        what = "a comment after the call"  # "# ..." swallowed the closing parenthesis
    elif isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
        what = _AROUND_THE_CALL.get(type(node.func), "more code around the call")
    else:
        what = _AROUND_THE_CALL.get(type(node), "more code around the call")
    raise PlanError(
        f"a plan line is exactly one tool call, but this one has {what}; write one call "
        'per line with literal arguments and $N references, like 2. search("words", $1)',
        line,
        raw,
    )


def parse_arguments(text: str, index: int = 1, earlier: Iterable[int] = (), line: int | None = None,
                    raw: str | None = None) -> tuple[list[Any], dict[str, Any], tuple[int, ...]]:  # fmt: skip
    """``'"x", 2, k=$1'`` -> positional values, keyword values, dependencies.

    Example:
        >>> parse_arguments('"price $10", $1, k=["${2}"]', index=3, earlier=[1, 2])
        (['price $10', Ref(index=1)], {'k': [Ref(index=2)]}, (1, 2))
    """
    known = set(earlier)
    call = _one_call(_hide_bare_refs(text), line, raw)
    nodes = [("argument " + str(i + 1), a) for i, a in enumerate(call.args)]
    nodes += [(f"argument {k.arg}", k.value) for k in call.keywords if k.arg]
    if any(k.arg is None for k in call.keywords) or any(
        isinstance(a, ast.Starred) for a in call.args
    ):
        raise PlanError("* and ** are not allowed in arguments", line, raw)
    values: list[Any] = []
    for label, node in nodes:
        try:
            values.append(ast.literal_eval(node))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            shown = ast.unparse(node)[:80].replace("'\\x00ref:", "$").replace("\\x00'", "")
            raise PlanError(f"{label} is not a literal value ({shown}); use strings, numbers, lists, "
                            "dicts, True/False/None or $N references", line, raw) from None  # fmt: skip
    resolved, deps = _references(values, index, known, line, raw)
    positional: list[Any] = resolved[: len(call.args)]
    names = [k.arg for k in call.keywords if k.arg is not None]  # ** was rejected above
    keywords: dict[str, Any] = dict(zip(names, resolved[len(call.args) :], strict=True))
    return positional, keywords, tuple(sorted(deps))


class PlanParser:
    """Reads the text format as it streams: ``feed`` returns the tasks completed by a
    chunk, ``close`` the rest. Reading stops at ``join()``.

    Example:
        >>> from concilium.tools import builtin_tools
        >>> parser = PlanParser(builtin_tools())
        >>> [t.index for t in parser.feed('1. calculator("2 + 2")\\n2. calcul')]
        [1]
        >>> [(t.tool, t.deps) for t in parser.feed('ator("$1 * 10")\\n3. join()')] + [
        ...     (t.tool, t.deps) for t in parser.close()
        ... ]
        [('calculator', (1,)), ('join', (1, 2))]
    """

    def __init__(self, registry: ToolRegistry):
        self.registry = registry
        self.tasks: dict[int, Task] = {}
        self.done = False
        self._buffer = ""
        self._line = 0
        self._thought: str | None = None

    def feed(self, chunk: str) -> list[Task]:
        if self.done:
            return []
        self._buffer += chunk
        out: list[Task] = []
        while "\n" in self._buffer and not self.done:
            line, self._buffer = self._buffer.split("\n", 1)
            task = self._read(line)
            if task is not None:
                out.append(task)
        return out

    def close(self) -> list[Task]:
        """The last line, and an implicit ``join`` if the plan did not end with one."""
        out: list[Task] = []
        if not self.done and self._buffer.strip():
            task = self._read(self._buffer)
            if task is not None:
                out.append(task)
        self._buffer = ""
        if not self.done:
            if not self.tasks:
                raise PlanError(
                    'the plan has no tasks; write numbered lines like 1. search("...") and end with join()'
                )
            out.append(self._join(max(self.tasks) + 1, None, None))
        return out

    def _join(self, index: int, line: int | None, text: str | None) -> Task:
        self.done = True
        task = Task(index, JOIN, deps=tuple(sorted(self.tasks)), thought=self._thought, line=line)
        self.tasks[index] = task
        return task

    def _read(self, raw: str) -> Task | None:
        self._line += 1
        text = raw.replace(END_OF_PLAN, "").strip()
        if not text:
            return None
        thought = _THOUGHT.match(text)
        if thought:
            self._thought = thought.group(1).strip()
            return None
        action = _ACTION.match(text)
        if action is None and _ACTION_START.match(text):
            raise PlanError("cannot read this line as one tool call; a plan line is exactly one call "
                            "that ends with its ')', like 2. search(\"words\", $1), with nothing after it",
                            self._line, raw)  # fmt: skip
        if action is None:
            raise PlanError("cannot read this line; write 'N. tool(arguments)', 'Thought: ...' or 'N. join()'",
                            self._line, raw)  # fmt: skip
        index, tool, args = int(action.group(1)), action.group(2), action.group(3)
        if self.tasks and index <= max(self.tasks):
            raise PlanError(
                f"task number {index} does not follow {max(self.tasks)}; number tasks 1, 2, 3, ...",
                self._line,
                raw,
            )
        if tool == JOIN:
            return self._join(index, self._line, raw)
        try:
            spec = self.registry.get(tool)
        except ToolError as exc:
            raise PlanError(str(exc), self._line, raw) from None
        positional, keywords, deps = parse_arguments(args, index, self.tasks, self._line, raw)
        try:
            arguments = spec.bind(positional, keywords)
        except ToolError as exc:
            raise PlanError(str(exc), self._line, raw) from None
        task = Task(index, tool, arguments, deps, self._thought, self._line)
        self._thought = None
        self.tasks[index] = task
        return task


def parse_plan(text: str, registry: ToolRegistry) -> list[Task]:
    """A whole plan in the text format."""
    parser = PlanParser(registry)
    return parser.feed(text) + parser.close()


def parse_json_plan(data: Any, registry: ToolRegistry) -> list[Task]:
    """``{"tasks": [{"id": 1, "tool": "search", "args": {...} or [...]}, ...]}`` -> tasks
    in dependency order. References are "$N" strings; unknown ids and cycles are errors.

    Example:
        >>> from concilium.tools import builtin_tools
        >>> plan = {
        ...     "tasks": [
        ...         {"id": 2, "tool": "calculator", "args": ["$1 * 2"]},
        ...         {"id": 1, "tool": "calculator", "args": {"expression": "3 + 4"}},
        ...     ]
        ... }
        >>> [(t.index, t.deps) for t in parse_json_plan(plan, builtin_tools())]
        [(1, ()), (2, (1,)), (3, (1, 2))]
    """
    try:
        check_depth(data)
    except JsonBoundsError as exc:
        raise PlanError(f"{exc}; a plan's arguments are a few levels deep at most") from None
    items: Any = cast("dict[str, Any]", data).get("tasks") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise PlanError(
            'a JSON plan is {"tasks": [{"id": 1, "tool": "...", "args": {...}}, ...]} with at least one task'
        )
    ids: list[int] = []
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(cast("list[Any]", items)):
        entry = cast("dict[str, Any]", item) if isinstance(item, dict) else {}
        if not isinstance(entry.get("id"), int) or not isinstance(entry.get("tool"), str):
            raise PlanError(
                f"task {i + 1} needs an integer 'id' and a 'tool' name: {str(cast('object', item))[:120]}"
            )
        ids.append(entry["id"])
        entries.append(entry)
    if len(set(ids)) != len(ids):
        raise PlanError(f"task ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    raw: dict[int, tuple[str, Any]] = {
        entry["id"]: (entry["tool"], entry.get("args", [])) for entry in entries
    }
    deps: dict[int, set[int]] = {}
    for tid, (_, args) in raw.items():
        found = {int(n) for n in _REF.findall(str(args))}
        missing = sorted(found - set(raw))
        if missing:
            raise PlanError(f"task {tid} refers to ${missing[0]}, which is not a task of this plan")
        deps[tid] = found
    order = _dependency_order(deps)
    tasks: list[Task] = []
    for tid in order:
        tool, args = raw[tid]
        try:
            spec = registry.get(tool)
        except ToolError as exc:
            raise PlanError(f"task {tid}: {exc}") from None
        positional = list(cast("list[Any]", args)) if isinstance(args, list) else []
        keywords = dict(cast("dict[str, Any]", args)) if isinstance(args, dict) else {}
        resolved, _ = _references([positional, keywords], tid, deps[tid], None, None)
        try:
            arguments = spec.bind(resolved[0], resolved[1])
        except ToolError as exc:
            raise PlanError(f"task {tid}: {exc}") from None
        tasks.append(Task(tid, tool, arguments, tuple(sorted(deps[tid])), None, None))
    tasks.append(Task(max(raw) + 1, JOIN, deps=tuple(sorted(raw))))
    return tasks


def _dependency_order(deps: Mapping[int, set[int]]) -> list[int]:
    """Task ids, each after the tasks it uses (depth-first in id order, without
    recursion: a model's plan may chain thousands of tasks); a cycle is a PlanError."""
    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done
    for root in sorted(deps):
        if state.get(root) == 2:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(sorted(deps[root]))]
        while stack:
            d = next(stack[-1], None)
            if d is None:
                state[path[-1]] = 2
                order.append(path.pop())
                stack.pop()
            elif state.get(d) == 1:
                cycle = [*path[path.index(d) :], d]
                raise PlanError(
                    f"the plan has a cycle: {' -> '.join(map(str, cycle))}; a task can only use results it does not lead to"
                )
            elif state.get(d) != 2:
                state[d] = 1
                path.append(d)
                stack.append(iter(sorted(deps[d])))
    return order
