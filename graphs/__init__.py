"""How agents are wired: graphs over a typed state, compiled to LangGraph; the
runtime; aggregators; workflow files. Patterns live in ``concilium.graphs.patterns``.

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

from typing import TYPE_CHECKING, Any

from langgraph.graph import END, START

from ._aggregators import (
    EXTRACTORS,
    AnswerFormat,
    Vote,
    answer_format,
    extract_boxed,
    extract_last_number,
    extract_option,
    extract_text,
    field_extractor,
    last_boxed,
    majority_vote,
    normalize_number,
    regex_extractor,
)
from ._confidence import (
    DEEPCONF_TOP_K,
    DEEPCONF_WINDOW,
    WeightedVote,
    group_confidences,
    keep_top_percent,
    soft_score,
    token_confidences,
    trace_confidence,
    weighted_vote,
)
from ._context import RunContext, current_run
from ._events import (
    CallFailed,
    CallFailover,
    CallFinished,
    CallReplayed,
    CallRetry,
    CallStarted,
    Event,
    NodeFinished,
    NodeStarted,
    ResultEvent,
    RoundStarted,
    StreamEvent,
    ToolEvent,
    Turn,
    TurnEvent,
    TurnExtra,
    VoteEvent,
)
from ._executor import DagNode, Executor, TaskRun, run_dag
from ._graph import BASE_STATE, Branch, Graph, add, append, merge
from ._kit import (
    PatternOptions,
    Respondent,
    ToolReply,
    VoteUpdate,
    ask,
    distinct_names,
    is_bare_question,
    last_user_text,
    numbered,
    prompt_library,
    report_vote,
    sample_turns,
    solve_messages,
    turn,
    use_tool,
    user,
)
from ._registry import (
    AgentSlot,
    AnswerSpec,
    AnyPatternSpec,
    Builder,
    PatternSpec,
    SlotAgent,
    pattern_kinds,
    pattern_specs,
    register_pattern,
    registered_pattern,
)
from ._runtime import (
    GraphAgent,
    RunResult,
    as_agent,
    partial_result,
    run,
    run_sync,
    split_input,
    stream,
)
from ._store import StateStore

__all__ = [
    # building
    "Graph",
    "Branch",
    "START",
    "END",
    "BASE_STATE",
    "append",
    "merge",
    "add",
    # running
    "run",
    "run_sync",
    "stream",
    "RunResult",
    "partial_result",
    "StateStore",
    "RunContext",
    "current_run",
    "split_input",
    "GraphAgent",
    "as_agent",
    # pattern kit
    "Respondent",
    "PatternOptions",
    "prompt_library",
    "ask",
    "use_tool",
    "ToolReply",
    "turn",
    "sample_turns",
    "report_vote",
    "VoteUpdate",
    "solve_messages",
    "user",
    "numbered",
    "distinct_names",
    "last_user_text",
    "is_bare_question",
    # transcript and events
    "Turn",
    "TurnExtra",
    "Event",
    "StreamEvent",
    "NodeStarted",
    "NodeFinished",
    "RoundStarted",
    "TurnEvent",
    "VoteEvent",
    "CallStarted",
    "CallFinished",
    "CallFailed",
    "CallReplayed",
    "CallRetry",
    "CallFailover",
    "ToolEvent",
    "ResultEvent",
    # tool plans
    "Executor",
    "run_dag",
    "DagNode",
    "TaskRun",
    # pattern registry (a pattern module registers its workflow spec and builder)
    "PatternSpec",
    "register_pattern",
    "Builder",
    "AgentSlot",
    "AnyPatternSpec",
    "AnswerSpec",
    "SlotAgent",
    "pattern_kinds",
    "pattern_specs",
    "registered_pattern",
    # workflow files (concilium.graphs.workflows, imported on first use)
    "Workflow",
    "WorkflowSpec",
    "load_workflow",
    "parse_workflow",
    "build_workflow",
    # aggregation
    "AnswerFormat",
    "answer_format",
    "EXTRACTORS",
    "extract_boxed",
    "extract_last_number",
    "extract_option",
    "extract_text",
    "regex_extractor",
    "field_extractor",
    "last_boxed",
    "normalize_number",
    "majority_vote",
    "Vote",
    # confidence (DeepConf, soft self-consistency)
    "DEEPCONF_TOP_K",
    "DEEPCONF_WINDOW",
    "token_confidences",
    "group_confidences",
    "trace_confidence",
    "soft_score",
    "keep_top_percent",
    "weighted_vote",
    "WeightedVote",
]


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .workflows import Workflow, WorkflowSpec, build_workflow, load_workflow, parse_workflow

_WORKFLOW_NAMES = ("Workflow", "WorkflowSpec", "load_workflow", "parse_workflow", "build_workflow")


def __getattr__(name: str) -> Any:
    # Workflow loading sits above the patterns, which import this package: load it
    # on first use so that importing the graph core imports no pattern (PEP 562).
    if name in _WORKFLOW_NAMES:
        from concilium.graphs import workflows

        return getattr(workflows, name)
    raise AttributeError(f"module 'concilium.graphs' has no attribute {name!r}")
