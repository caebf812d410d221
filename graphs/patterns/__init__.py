"""Parallel-reasoning patterns, each a short module built from the public API of
``concilium.graphs`` and ``concilium.agents`` (write your own the same way).

Example:
    >>> from concilium.graphs.patterns import debate, self_consistency
    >>> callable(debate) and callable(self_consistency)
    True
"""

from concilium.graphs import Respondent

from ._adaptive import adaptive_consistency, beta_confidence, should_stop
from ._agent_forest import agent_forest, bleu_similarity, most_similar
from ._best_of_n import (
    best_of_n,
    knockout,
    parse_consistent_index,
    parse_score,
    parse_winner,
    universal_self_consistency,
    yes_probability,
)
from ._chateval import chateval, parse_scores
from ._citations import CitedSource, CitedText, describe_location, resolve_citations
from ._cross_review import confidence, cross_review, readers
from ._debate import debate
from ._division_of_thoughts import DotPlan, DotStep, division_of_thoughts, quantile_confidence
from ._graph_of_thoughts import Operation, graph_of_thoughts, sort_errors
from ._leap import leap, overlap, route
from ._manager_worker import (
    Plan,
    Subtask,
    chain_of_agents,
    chunk_sentences,
    manager_worker,
    split_query,
)
from ._mixture import mixture_of_agents, parse_selection
from ._overlapped_tools import CallFrame, overlapped_tools, parse_calls, run_call
from ._plan_and_execute import JsonPlan, parse_decision, plan_and_execute
from ._react import react
from ._research import NO_EVIDENCE, parse_subquestions, research
from ._round_table import recalibrate, round_table, top_groups
from ._search_decomposition import fuse_hits, parse_queries, search_decomposition
from ._self_consistency import self_consistency
from ._semantic_entropy import cluster_entropy, semantic_entropy
from ._skeleton import outline_points, skeleton_of_thought
from ._synthesis import synthesis
from ._tree_of_thoughts import judgement_value, tree_of_thoughts
from ._weighted import confidence_consistency

__all__ = [
    "Respondent",
    # deliberation
    "debate",
    "round_table",
    "recalibrate",
    "top_groups",
    "chateval",
    "parse_scores",
    "cross_review",
    "readers",
    "confidence",
    "leap",
    "overlap",
    "route",
    # sampling and voting
    "self_consistency",
    "adaptive_consistency",
    "beta_confidence",
    "should_stop",
    "semantic_entropy",
    "cluster_entropy",
    "confidence_consistency",
    "agent_forest",
    "bleu_similarity",
    "most_similar",
    # judges
    "best_of_n",
    "knockout",
    "universal_self_consistency",
    "parse_score",
    "parse_winner",
    "parse_consistent_index",
    "yes_probability",
    # layered and divided work
    "mixture_of_agents",
    "parse_selection",
    "manager_worker",
    "Plan",
    "Subtask",
    "chain_of_agents",
    "chunk_sentences",
    "split_query",
    "synthesis",
    "division_of_thoughts",
    "DotPlan",
    "DotStep",
    "quantile_confidence",
    # tools
    "plan_and_execute",
    "react",
    "overlapped_tools",
    "parse_calls",
    "run_call",
    "CallFrame",
    "parse_decision",
    "JsonPlan",
    "search_decomposition",
    "parse_queries",
    "fuse_hits",
    # structured generation and search
    "skeleton_of_thought",
    "outline_points",
    "tree_of_thoughts",
    "judgement_value",
    "graph_of_thoughts",
    "Operation",
    "sort_errors",
    # research
    "resolve_citations",
    "CitedText",
    "CitedSource",
    "describe_location",
    "research",
    "parse_subquestions",
    "NO_EVIDENCE",
]
