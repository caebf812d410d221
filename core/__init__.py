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
    ModelCallError,
    ModelError,
    OutputParseError,
    RunError,
    UserError,
    WorkflowError,
)

# name -> the concilium module that defines it (a fixed table, not user input): what
# the README's quickstart imports; everything else is imported from its package
_LAZY = {
    "Agent": "concilium.agents",
    "ModelSpec": "concilium.agents",
    "run": "concilium.graphs",
    "debate": "concilium.graphs.patterns",
    "SimServer": "concilium.serving",
    "SimConfig": "concilium.agents.sim",
}

__all__ = [
    # errors, by who acts on them (their subclasses are caught through these)
    "ConciliumError",
    "UserError",
    "WorkflowError",
    "GraphError",
    "ModelError",
    "ModelCallError",
    "OutputParseError",
    "RunError",
    "BudgetExceeded",
    # the quickstart, lazily imported (the keys of _LAZY; spelled out for type checkers)
    "Agent",
    "ModelSpec",
    "run",
    "debate",
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
    from concilium.agents import Agent, ModelSpec
    from concilium.agents.sim import SimConfig
    from concilium.graphs import run
    from concilium.graphs.patterns import debate
    from concilium.serving import SimServer
