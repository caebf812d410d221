"""How agents are wired: graphs over a typed state, compiled to LangGraph; the
runtime; the pattern kit. Patterns live in ``concilium.graphs.patterns``, workflow
files in ``concilium.graphs.workflows``.

Example:
    >>> from concilium.graphs import Graph, START, END, run_sync
    >>> g = Graph("echo")
    >>> async def echo(state):
    ...     return {"answer": state["question"]}
    >>> _ = (
    ...     g.add_node("echo", echo, writes=["answer"])
    ...     .add_edge(START, "echo")
    ...     .add_edge("echo", END)
    ... )
    >>> run_sync(g, "hi").answer
    'hi'
"""

from langgraph.graph import END, START

from . import reducers
from ._aggregators import AnswerFormat, majority_vote, normalize_number
from ._context import RunContext, current_run
from ._events import Event, Turn
from ._executor import DagNode, Executor, TaskRun, run_dag
from ._graph import Branch, Graph
from ._kit import (
    PatternOptions,
    Respondent,
    ask,
    distinct_names,
    prompt_library,
    report_vote,
    sample_turns,
    solve_messages,
    turn,
    use_tool,
    user,
)
from ._registry import AgentSlot, AnswerSpec, Builder, PatternSpec, register_pattern
from ._runtime import RunResult, as_agent, partial_result, run, run_sync, stream
from ._store import StateStore

__all__ = [
    # building
    "Graph",
    "Branch",
    "START",
    "END",
    "reducers",  # how parallel writes to a state key combine: append, merge, add
    # running
    "run",
    "run_sync",
    "stream",
    "RunResult",
    "Event",
    "partial_result",
    "StateStore",
    "RunContext",
    "current_run",
    "as_agent",
    # pattern kit
    "Respondent",
    "PatternOptions",
    "prompt_library",
    "ask",
    "use_tool",
    "turn",
    "Turn",
    "sample_turns",
    "report_vote",
    "solve_messages",
    "user",
    "distinct_names",
    # DAGs of steps and plans of tool calls
    "run_dag",
    "DagNode",
    "Executor",
    "TaskRun",
    # pattern registry (a pattern module registers its workflow spec and builder)
    "PatternSpec",
    "register_pattern",
    "Builder",
    "AgentSlot",
    "AnswerSpec",
    # aggregation
    "AnswerFormat",
    "majority_vote",
    "normalize_number",
]
