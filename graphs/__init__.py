"""How agents are wired: graphs over a typed state, compiled to LangGraph, and the
runtime that runs them. What a pattern is written with is ``concilium.graphs.kit``;
the patterns live in ``concilium.graphs.patterns``, workflow files in
``concilium.graphs.workflows``.

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

from . import kit, reducers
from ._context import RunContext, current_run
from ._events import Event
from ._executor import DagNode, Executor, TaskRun, run_dag
from ._graph import Branch, Graph
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
    # DAGs of steps and plans of tool calls
    "run_dag",
    "DagNode",
    "Executor",
    "TaskRun",
    # writing a pattern: asking, turns, votes, answer formats, a kind: for workflow files
    "kit",
]
