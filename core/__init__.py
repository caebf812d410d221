"""concilium: parallel reasoning with many agents.

Debate, self-consistency and the other methods of the survey on parallel reasoning,
as declarative graphs (Python or YAML) over async agents that call OpenAI-compatible
servers (a local vLLM cluster, the embedded engine, the simulated server) through
litellm or a direct aiohttp transport.

Everything below is re-exported lazily (PEP 562): ``import concilium`` is cheap, and
``concilium.Agent`` imports the agents package on first use.

Example:
    >>> import concilium
    >>> concilium.debate.__name__
    'debate'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._errors import (
    BudgetExceeded,
    ConciliumError,
    GraphError,
    MalformedReplyError,
    ModelCallError,
    ModelError,
    OutputParseError,
    PromptError,
    RunError,
    ServerError,
    UserError,
    WorkflowError,
)

# name -> the concilium module that defines it (a fixed table, not user input)
_LAZY = {
    # agents
    "Agent": "concilium.agents",
    "AgentReply": "concilium.agents",
    "ModelSpec": "concilium.agents",
    "Capabilities": "concilium.agents",
    "Budget": "concilium.agents",
    "FakeModel": "concilium.agents",
    "configure_tracing": "concilium.agents",
    "aclose": "concilium.agents",
    # graphs
    "Graph": "concilium.graphs",
    "Branch": "concilium.graphs",
    "START": "concilium.graphs",
    "END": "concilium.graphs",
    "run": "concilium.graphs",
    "run_sync": "concilium.graphs",
    "stream": "concilium.graphs",
    "RunResult": "concilium.graphs",
    "as_agent": "concilium.graphs",
    "load_workflow": "concilium.graphs",
    "majority_vote": "concilium.graphs",
    # patterns
    "debate": "concilium.graphs.patterns",
    "self_consistency": "concilium.graphs.patterns",
    # serving
    "SimServer": "concilium.serving",
    "SimConfig": "concilium.serving",
}

__all__ = [
    # errors
    "ConciliumError",
    "UserError",
    "WorkflowError",
    "GraphError",
    "PromptError",
    "ModelError",
    "ModelCallError",
    "MalformedReplyError",
    "OutputParseError",
    "RunError",
    "BudgetExceeded",
    "ServerError",
    # lazily imported (the keys of _LAZY; spelled out so type checkers read them)
    "Agent",
    "AgentReply",
    "ModelSpec",
    "Capabilities",
    "Budget",
    "FakeModel",
    "configure_tracing",
    "aclose",
    "Graph",
    "Branch",
    "START",
    "END",
    "run",
    "run_sync",
    "stream",
    "RunResult",
    "as_agent",
    "load_workflow",
    "majority_vote",
    "debate",
    "self_consistency",
    "SimServer",
    "SimConfig",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'concilium' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from concilium.agents import (
        Agent,
        AgentReply,
        Budget,
        Capabilities,
        FakeModel,
        ModelSpec,
        aclose,
        configure_tracing,
    )
    from concilium.graphs import (
        END,
        START,
        Branch,
        Graph,
        RunResult,
        as_agent,
        load_workflow,
        majority_vote,
        run,
        run_sync,
        stream,
    )
    from concilium.graphs.patterns import debate, self_consistency
    from concilium.serving import SimConfig, SimServer
