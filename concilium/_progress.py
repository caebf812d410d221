"""What the CLI shows: a live status line on a terminal, and the result as text."""

from __future__ import annotations

import time
from typing import Any, TextIO


class Progress:
    """One status line on a terminal: round, calls running by agent, calls done, tokens.

    Redrawn at most ten times a second; nothing is shown when output is not a
    terminal (``for_terminal`` returns ``None``).
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.running: dict[str, int] = {}
        self.done = 0
        self.tokens = 0
        self.round: int | None = None
        self._drawn = 0.0

    @classmethod
    def for_terminal(cls, stream: TextIO) -> Progress | None:
        return cls(stream) if stream.isatty() else None

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        agent = event.get("agent", "")
        if kind == "call_started":
            self.running[agent] = self.running.get(agent, 0) + 1
        elif kind in ("call_finished", "call_failed"):
            self.running[agent] = max(self.running.get(agent, 1) - 1, 0)
            if kind == "call_finished":
                self.done += 1
                self.tokens += event.get("prompt_tokens", 0) + event.get("completion_tokens", 0)
        elif kind == "round_started":
            self.round = event.get("round")
        self._draw()

    def _draw(self) -> None:
        now = time.monotonic()
        if now - self._drawn < 0.1:
            return
        self._drawn = now
        busy = ", ".join(f"{a}x{n}" if n > 1 else a for a, n in self.running.items() if n)
        parts = [f"round {self.round}" if self.round else "", f"running: {busy or '-'}",
                 f"calls done: {self.done}", f"tokens: {self.tokens}"]  # fmt: skip
        line = " | ".join(p for p in parts if p)
        self.stream.write("\r\x1b[2K" + line[:200])
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_result(result: Any, *, backend: str | None = None) -> str:
    """A run as text: the transcript by round, the votes, the answer, the costs."""
    lines: list[str] = []
    if backend == "sim":
        lines.append("(backend: simulated server -- a test double; its replies are not a model's)")
    elif backend == "local":
        lines.append("(backend: embedded engine -- Gemma 3 270M base on vLLM's CPU build: real tokens, weak answers)")
    rounds: dict[Any, list[dict[str, Any]]] = {}
    for entry in result.transcript:
        rounds.setdefault(entry.get("round", entry.get("path", "")), []).append(entry)
    for key, entries in rounds.items():
        lines.append(f"== round {key}" if isinstance(key, int) else f"== {key or 'samples'}")
        for e in entries:
            label = e["agent"] + (f"#{e['sample']}" if "sample" in e else "")
            saw = f" (saw: {', '.join(e['saw'])})" if e.get("saw") else ""
            lines.append(f"  {label}{saw}: {_short(e['text'])}")
            lines.append(f"      -> answer: {e['answer']}")
    if result.votes:
        lines.append(f"votes: {result.votes['counts']} (agreement {result.votes['agreement']:.0%})")
    lines.append(f"answer: {result.answer}")
    lines.append(
        f"calls: {result.calls}, tokens: {result.usage.prompt_tokens} in / "
        f"{result.usage.completion_tokens} out, {result.elapsed_s:.2f} s"
    )
    return "\n".join(lines)
