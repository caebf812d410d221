"""A local web UI for concilium runs: live runs, history, self-contained reports."""

from ._app import add_ui, find_workflows
from ._evals import render_eval_report
from ._history import RunHistory, RunSummary
from ._render import EventLog, render_report

__all__ = [
    "add_ui",
    "find_workflows",
    "RunHistory",
    "RunSummary",
    "render_report",
    "render_eval_report",
    "EventLog",
]
