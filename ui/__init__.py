"""A local web UI for concilium runs: live runs, history, self-contained reports."""

from ._app import add_ui
from ._evals import render_eval_report
from ._history import RunHistory
from ._render import EventLog

__all__ = [
    # the UI on a server (concilium ui, serve api --ui)
    "add_ui",
    # the runs it keeps, in the state file
    "RunHistory",
    # the one-file reports of a run (concilium run --report) and of an eval (eval --report)
    "EventLog",
    "render_eval_report",
]
