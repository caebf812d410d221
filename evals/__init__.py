"""Evaluation: score workflows on datasets (accuracy against tokens), compare methods.

The public names are listed in ``__all__``; the modules behind them are private.
"""

from . import tasks
from ._data import EvalRecord, load_records
from ._deepconf_replay import render_replay, replay_deepconf
from ._ray import evaluate_on_ray
from ._runner import ItemResult, evaluate
from ._scorers import default_scorer, scorer_from_name
from ._summary import MethodSummary, render_table, summarise, write_summary
from ._sweep import build_methods, parse_setting

__all__ = [
    # data
    "EvalRecord",
    "load_records",
    # scoring: by name (exact, numeric, option, regex:..., contains) or chosen from the answers
    "scorer_from_name",
    "default_scorer",
    # methods: workflows, and the grid of --set values swept over them
    "build_methods",
    "parse_setting",
    # running (here or on Ray workers), one ItemResult per (item, method)
    "evaluate",
    "evaluate_on_ray",
    "ItemResult",
    # summarising: accuracy with intervals, cost, curves, the plot (summary.json)
    "summarise",
    "MethodSummary",
    "render_table",
    "write_summary",
    # DeepConf online's rule replayed on stored samples (pick keep and consensus before spending)
    "replay_deepconf",
    "render_replay",
    # shipped tasks with known answers
    "tasks",
]
