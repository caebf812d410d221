"""The UI's pages and the self-contained report, from one template and one script."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from ._research import research_sources

_TEMPLATES = files("concilium.ui") / "templates"
_env = jinja2.Environment(
    loader=jinja2.FunctionLoader(lambda name: (_TEMPLATES / name).read_text("utf-8")),
    autoescape=True,
)


# Inside <script>, "</script" ends the element and "<!--" followed by "<script" makes the
# parser ignore the next "</script>" (the rest of the page becomes script and nothing
# renders): no "<" may reach the page raw. ">" and "&" go too (a CDATA or comment end),
# and U+2028/U+2029, which end a line in older JavaScript.
_SCRIPT_SAFE = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}


def inline_json(value: object) -> str:
    """``value`` as JSON that is inert inside a ``<script>`` element: JSON.parse reads the
    same value, and no string in it can end the element or open a comment.

    Example:
        >>> text = "<!--<script></script>"
        >>> json.loads(inline_json(text)) == text, "<" in inline_json(text)
        (True, False)
    """
    return json.dumps(value, ensure_ascii=False).translate(_SCRIPT_SAFE)


def render_page(mode: str, title: str, *, prefix: str = "", key: str = "", **context: Any) -> str:
    """One page: ``start``, ``history``, or ``view`` (``records``: the runs to show).

    ``key``: the ``?key=`` the browser came with (off 127.0.0.1); the page's own
    links, forms and event stream carry it on.
    """
    records = context.pop("records", [])
    q = f"?key={quote(key, safe='')}" if key else ""
    return _env.get_template("page.html").render(
        mode=mode,
        title=title,
        prefix=prefix,
        key=key,
        q=q,
        css=(_TEMPLATES / "style.css").read_text("utf-8"),
        js=(_TEMPLATES / "view.js").read_text("utf-8"),
        records=records,
        data=inline_json(records),
        **context,
    )


def render_report(record: dict[str, Any]) -> str:
    """A finished run as one HTML file: styles, script and the run's data inline.

    Example:
        >>> html = render_report(
        ...     {"run_id": "r", "workflow": "debate", "question": "q", "events": [], "result": None}
        ... )
        >>> "<script" in html and "http" not in html.split("<body>")[1]
        True
    """
    return render_page(
        "view", f"{record['workflow']}: run {record['run_id']}", records=[record], report=True
    )


class EventLog:
    """An ``on_event`` sink that keeps a run's events with their time, for a report.

    Args:
        forward: another sink to pass each event on to (e.g. the progress line).

    Example:
        >>> log = EventLog()
        >>> log({"type": "node_started", "node": "speak"})
        >>> [e["type"] for e in log.events], "t" in log.events[0]
        (['node_started'], True)
    """

    def __init__(self, forward: Callable[[Any], None] | None = None):
        self.forward = forward
        self.events: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self.started = time.time()

    def __call__(self, event: Any) -> None:
        self.events.append({**event, "t": round(time.monotonic() - self._t0, 4)})
        if self.forward is not None:
            self.forward(event)

    def record(
        self, result: Any, workflow: str, question: str, *, file: str | Path | None = None
    ) -> dict[str, Any]:
        """The run as the UI keeps it: ids, question, events and ``result.to_json()``
        (and for a research run, the passages it cites, read from the documents of
        the workflow ``file``)."""
        done = result.to_json()
        record = {
            "run_id": done.get("run_id") or "run",
            "workflow": done.get("workflow") or workflow,
            "question": question,
            "started": self.started,
            "events": self.events,
            "result": done,
        }
        sources = research_sources(done, file)
        if sources is not None:
            record["sources"] = sources
        return record

    def report(
        self, result: Any, workflow: str, question: str, *, file: str | Path | None = None
    ) -> str:
        """The finished run as a self-contained HTML file (``run --report``); ``file``:
        the workflow file, whose documents a research report's citations open."""
        return render_report(self.record(result, workflow, question, file=file))
