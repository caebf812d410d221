"""Evaluation: score workflows on datasets (accuracy against tokens), compare methods.

The public names are listed in ``__all__``; the modules behind them are private.
"""

from ._data import DataError, EvalRecord, load_records
from ._plot import MethodPoint, pareto_frontier, plot_accuracy_vs_tokens
from ._ray import evaluate_on_ray
from ._runner import ItemResult, evaluate
from ._scorers import (
    ContainsScorer,
    ExactScorer,
    NumericScorer,
    OptionScorer,
    RegexScorer,
    Scorer,
    default_scorer,
    scorer_from_name,
)
from ._stats import CurvePoint, majority_at_k, mcnemar_exact, wilson_interval
from ._summary import MethodSummary, render_table, summarise, write_summary
from ._sweep import Method, Setting, build_methods, parse_setting
from ._tasks import describe_task, make_task, task_names

__all__ = [
    # data
    "EvalRecord",
    "DataError",
    "load_records",
    # scoring
    "Scorer",
    "ExactScorer",
    "NumericScorer",
    "OptionScorer",
    "RegexScorer",
    "ContainsScorer",
    "scorer_from_name",
    "default_scorer",
    # methods
    "Method",
    "Setting",
    "parse_setting",
    "build_methods",
    # running and summarising
    "evaluate",
    "evaluate_on_ray",
    "ItemResult",
    "MethodSummary",
    "summarise",
    "render_table",
    "write_summary",
    # statistics
    "wilson_interval",
    "mcnemar_exact",
    "CurvePoint",
    "majority_at_k",
    # the plot
    "MethodPoint",
    "pareto_frontier",
    "plot_accuracy_vs_tokens",
    # shipped tasks
    "task_names",
    "describe_task",
    "make_task",
]
