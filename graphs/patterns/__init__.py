"""Parallel-reasoning patterns, each a short module built from the public API of
``concilium.graphs`` and ``concilium.agents`` (write your own the same way).

Example:
    >>> from concilium.graphs.patterns import debate, self_consistency
    >>> callable(debate) and callable(self_consistency)
    True
"""

from ._adaptive import adaptive_consistency
from ._agent_forest import agent_forest
from ._best_of_n import best_of_n, knockout, universal_self_consistency, yes_probability
from ._chateval import chateval
from ._citations import describe_location, resolve_citations
from ._cross_review import cross_review
from ._debate import debate
from ._deepconf_online import deepconf_online
from ._division_of_thoughts import division_of_thoughts
from ._graph_of_thoughts import Operation, graph_of_thoughts
from ._leap import leap
from ._manager_worker import chain_of_agents, manager_worker
from ._mixture import mixture_of_agents
from ._overlapped_tools import overlapped_tools, parse_calls, run_call
from ._plan_and_execute import plan_and_execute
from ._react import react
from ._research import research
from ._round_table import round_table
from ._search_decomposition import search_decomposition
from ._self_consistency import self_consistency
from ._semantic_entropy import semantic_entropy
from ._skeleton import skeleton_of_thought
from ._synthesis import synthesis
from ._tree_of_thoughts import tree_of_thoughts
from ._weighted import confidence_consistency

# One builder per kind (docs/methods.md), named as the kind; the helpers other
# packages reuse are listed last.
__all__ = [
    # deliberation
    "debate",
    "round_table",
    "chateval",
    "cross_review",
    "leap",
    "mixture_of_agents",
    # sampling and voting
    "self_consistency",
    "adaptive_consistency",
    "semantic_entropy",
    "confidence_consistency",
    "deepconf_online",
    "agent_forest",
    # judges and synthesis
    "best_of_n",
    "knockout",
    "universal_self_consistency",
    "synthesis",
    # structured generation and search
    "skeleton_of_thought",
    "tree_of_thoughts",
    "graph_of_thoughts",
    "Operation",  # graph_of_thoughts' operations
    # divided work
    "manager_worker",
    "chain_of_agents",
    "division_of_thoughts",
    # tools and research
    "plan_and_execute",
    "react",
    "overlapped_tools",
    "search_decomposition",
    "research",
    # helpers other packages reuse: overlapped_tools' [CALL] frames (bench overlap),
    # the yes/no verifier's probability and citations (bench research, the UI)
    "parse_calls",
    "run_call",
    "yes_probability",
    "resolve_citations",
    "describe_location",
]
