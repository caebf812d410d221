"""Who thinks: agents, model deployments, transports, the call ledger, test doubles.

Example:
    >>> from concilium.agents import Agent, ModelSpec
    >>> Agent("solver", ModelSpec("hosted_vllm/gemma", api_base="http://127.0.0.1:8000/v1")).name
    'solver'
"""

from . import ledger, sim, wire
from ._agent import Agent, AgentReply
from ._endpoints import Endpoints
from ._fake import FakeModel
from ._ledger import Budget
from ._model import Capabilities, ModelSpec
from ._redact import private_file, redact
from ._sampling import Sampling
from ._schemas import AnswerConfidence
from ._task_group import task_group
from ._tool_loop import run_with_tools
from ._tracing import configure_tracing, eval_span, item_span, workflow_span
from ._transports import aclose
from ._types import Choice, Completion, Message, TokenLogprob, Usage

__all__ = [
    # agents
    "Agent",
    "AgentReply",
    "run_with_tools",
    "AnswerConfidence",
    # deployments
    "ModelSpec",
    "Capabilities",
    "Endpoints",
    "aclose",
    # what a run may spend; the call ledger every call goes through (and its record)
    "Budget",
    "Sampling",  # a run's seed / temperature / max_tokens imposed on every call
    "ledger",
    # values
    "Message",
    "Usage",
    "TokenLogprob",
    "Completion",  # what a transport returns (ModelSpec(transport=...)): its choices
    "Choice",
    "wire",  # the OpenAI wire format: response bodies, chunks, errors, usage
    # calls side by side: the first failure cancels the rest
    "task_group",
    # tracing
    "configure_tracing",
    "workflow_span",
    "eval_span",  # concilium eval: one linked trace per run (item_span)
    "item_span",
    # secrets: credentials masked in what is written, files only their owner reads
    "redact",
    "private_file",
    # test doubles: a fake model in process, and how the simulated server answers
    # (the schema of a workflow's simulate:)
    "FakeModel",
    "sim",
]
