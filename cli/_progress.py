"""What the CLI shows: a live status line on a terminal, and the result as text.

Everything shown passes through ``escape_controls``: answers are a model's text,
and a model (or a hostile server) must not be able to move the cursor or rewrite
the user's terminal with escape sequences.

Both read transcript entries, events, votes and details generically: every pattern
reports its own keys (a confidence-weighted vote has ``weights``, not ``counts``;
Mixture-of-Agents says how *many* answers an agent saw, debate *which*), so nothing
here may assume one pattern's shape. Entries may be mappings or typed objects
(dataclasses, TypedDicts) with the same field names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TextIO, cast

from concilium._errors import escape_controls

__all__ = ["Progress", "render_result"]

# transcript keys shown next to the agent's name, in this order
_TAGS = ("role", "step", "chunk", "point", "index", "task")
_SHORT = 160


def _mapping(value: object) -> Mapping[object, object] | None:
    return cast("Mapping[object, object]", value) if isinstance(value, Mapping) else None


def _items(value: object) -> Sequence[object] | None:
    return cast("Sequence[object]", value) if isinstance(value, (list, tuple)) else None


def _get(obj: object, key: str, default: object = None) -> Any:
    """``obj[key]`` for a mapping, ``obj.key`` for a typed object."""
    mapping = _mapping(obj)
    if mapping is not None:
        return mapping.get(key, default)
    return getattr(obj, key, default)


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Progress:
    """One status line on a terminal: round, calls running by agent, calls done, tokens.

    Redrawn at most ten times a second; nothing is shown when output is not a
    terminal (``for_terminal`` returns ``None``).

    Example:
        >>> import io
        >>> p = Progress(io.StringIO())
        >>> p.on_event({"type": "call_started", "agent": "alice"})
        >>> p.on_event({"type": "call_finished", "agent": "alice", "completion_tokens": 5})
        >>> (p.done, p.tokens, p.running)
        (1, 5, {'alice': 0})
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.running: dict[str, int] = {}
        self.done = 0
        self.tokens = 0
        self.round: object = None
        self._drawn = 0.0

    @classmethod
    def for_terminal(cls, stream: TextIO) -> Progress | None:
        return cls(stream) if stream.isatty() else None

    def on_event(self, event: object) -> None:
        kind = _get(event, "type")
        agent = str(_get(event, "agent") or "")
        if kind == "call_started":
            self.running[agent] = self.running.get(agent, 0) + 1
        elif kind in ("call_finished", "call_failed"):
            self.running[agent] = max(self.running.get(agent, 1) - 1, 0)
            if kind == "call_finished":
                self.done += 1
                prompt, completion = _get(event, "prompt_tokens"), _get(event, "completion_tokens")
                self.tokens += _number(prompt) + _number(completion)
        elif kind == "round_started":
            self.round = _get(event, "round")
        self._draw()

    def line(self) -> str:
        """The status line as it is drawn (without the terminal's control codes)."""
        busy = ", ".join(f"{a}x{n}" if n > 1 else (a or "?") for a, n in self.running.items() if n)
        parts = [
            f"round {self.round}" if self.round not in (None, "") else "",
            f"running: {busy or '-'}",
            f"calls done: {self.done}",
            f"tokens: {self.tokens}",
        ]
        return escape_controls(" | ".join(p for p in parts if p))

    def _draw(self) -> None:
        now = time.monotonic()
        if now - self._drawn < 0.1:
            return
        self._drawn = now
        self.stream.write("\r\x1b[2K" + self.line()[:200])
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()


def _short(text: object, limit: int = _SHORT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _compact(value: object) -> str:
    """A value on one line: strings as they are, the rest as JSON (numbers rounded)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.4g}"
    mapping, items = _mapping(value), _items(value)
    if mapping is not None:
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in mapping.items()) + "}"
    if items is not None:
        return "[" + ", ".join(_compact(v) for v in items) + "]"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _saw(saw: object) -> str:
    """Which answers an agent saw: names (debate), a count (MoA), or nothing."""
    if saw is None or saw == [] or saw == "":
        return ""
    names = _items(saw)
    if names is not None:
        return f" (saw: {', '.join(str(s) for s in names)})"
    if isinstance(saw, int) and not isinstance(saw, bool):
        return f" (saw {saw} answer{'s' if saw != 1 else ''})"
    return f" (saw: {_compact(saw)})"


def _group(entry: object) -> object:
    for key in ("round", "path"):
        value = _get(entry, key)
        if value not in (None, ""):
            return value
    return ""


def _turn_lines(entry: object) -> list[str]:
    label = str(_get(entry, "agent", "?"))
    sample = _get(entry, "sample")
    if sample is not None:
        label += f"#{sample}"
    tags = [
        f"{key} {_short(_get(entry, key), 40)}" for key in _TAGS if _get(entry, key) is not None
    ]
    if tags:
        label += f" [{'; '.join(tags)}]"
    lines = [f"  {label}{_saw(_get(entry, 'saw'))}: {_short(_get(entry, 'text', ''))}"]
    scored = [
        f"{key} {_compact(_get(entry, key))}"
        for key in ("confidence", "weight", "kept")
        if _get(entry, key) is not None
    ]
    answer = _get(entry, "answer")
    if answer is not None or scored:
        shown = f"answer: {_short(answer, 80)}" if answer is not None else "no answer"
        lines.append(f"      -> {', '.join([shown, *scored])}")
    return lines


class _Usage(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class _Result(Protocol):
    """What ``render_result`` reads of a ``RunResult``."""

    @property
    def answer(self) -> object: ...
    @property
    def transcript(self) -> Any: ...
    @property
    def votes(self) -> Any: ...
    @property
    def details(self) -> Any: ...
    @property
    def calls(self) -> int: ...
    @property
    def usage(self) -> _Usage: ...
    @property
    def elapsed_s(self) -> float: ...


def _votes_line(votes: object) -> str:
    if _mapping(votes) is None:
        return f"votes: {_short(_compact(votes))}"
    tally = _get(votes, "counts")
    if tally is None:
        tally = _get(votes, "weights")
    text = f"votes: {_short(_compact(tally if tally is not None else votes))}"
    agreement = _get(votes, "agreement")
    if isinstance(agreement, (int, float)) and not isinstance(agreement, bool):
        text += f" (agreement {agreement:.0%})"
    abstained = _get(votes, "abstained")
    if abstained:
        text += f", {abstained} abstained"
    return text


def render_result(result: _Result, *, backend: str | None = None) -> str:
    """A run as text: the transcript by round, the votes, the details, the answer, the costs.

    Example:
        >>> from concilium.graphs import RunResult
        >>> r = RunResult(
        ...     answer="84",
        ...     run_id="r",
        ...     workflow="w",
        ...     transcript=[{"agent": "a", "round": 1, "text": "84", "answer": "84"}],
        ...     votes={"winner": "84", "weights": {"84": 0.9}, "agreement": 1.0},
        ... )
        >>> print(render_result(r))
        == round 1
          a: 84
              -> answer: 84
        votes: {84: 0.9} (agreement 100%)
        answer: 84
        calls: 0, tokens: 0 in / 0 out, 0.00 s
    """
    lines: list[str] = []
    if backend == "sim":
        lines.append("(backend: simulated server -- a test double; its replies are not a model's)")
    elif backend == "local":
        lines.append(
            "(backend: embedded engine -- Gemma 3 270M base on vLLM's CPU build: "
            "real tokens, weak answers)"
        )
    groups: dict[str, list[object]] = {}
    for entry in result.transcript or ():
        key = _group(entry)
        title = f"round {key}" if isinstance(key, int) else str(key or "samples")
        groups.setdefault(title, []).append(entry)
    for title, entries in groups.items():
        lines.append(f"== {title}")
        for entry in entries:
            lines.extend(_turn_lines(entry))
    if result.votes:
        lines.append(_votes_line(result.votes))
    details = _mapping(result.details)
    if details:
        lines.append("details:")
        for key, value in details.items():
            lines.append(f"  {key}: {_short(_compact(value))}")
    answer = result.answer
    answer_lines = str(answer).splitlines() if answer is not None else []
    if len(answer_lines) > 1:
        lines.append("answer:")
        lines.extend(f"  {line}" for line in answer_lines)
    else:
        lines.append(f"answer: {answer if answer is not None else '(none)'}")
    lines.append(
        f"calls: {result.calls}, tokens: {result.usage.prompt_tokens} in / "
        f"{result.usage.completion_tokens} out, {result.elapsed_s:.2f} s"
    )
    return escape_controls("\n".join(lines))
