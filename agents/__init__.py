"""Who thinks: agents, model deployments, transports, the call ledger, test doubles.

Example:
    >>> from concilium.agents import Agent, ModelSpec
    >>> Agent("solver", ModelSpec("hosted_vllm/gemma", api_base="http://127.0.0.1:8000/v1")).name
    'solver'
"""

from . import _wire as wire
from ._agent import Agent, AgentReply, parse_json_output
from ._endpoints import Endpoints
from ._fake import FakeModel, FakeRequest
from ._ledger import (
    Budget,
    CallLedger,
    RetryPolicy,
    current_ledger,
    request_digest,
    reset_ledger,
    use_ledger,
)
from ._model import Capabilities, ModelPool, ModelSpec, Replica, pool_for
from ._record import CallRecord, SqliteCallRecord
from ._redact import private_file, redact
from ._schemas import OUTPUT_SCHEMAS, AnswerConfidence
from ._sim_config import Faults, Latency, Rule, SimConfig, Statistical
from ._tool_loop import ToolTurns, run_with_tools
from ._tracing import JsonLinesSpanExporter, configure_tracing, workflow_span
from ._transports import DirectTransport, Transport, aclose, transport_for
from ._types import Choice, Completion, Message, TokenLogprob, Usage, completion_from_openai

__all__ = [
    # agents
    "Agent",
    "AgentReply",
    "parse_json_output",
    "run_with_tools",
    "ToolTurns",
    "AnswerConfidence",
    "OUTPUT_SCHEMAS",
    # deployments and routing
    "Capabilities",
    "ModelSpec",
    "Endpoints",
    "ModelPool",
    "Replica",
    "pool_for",
    # transport
    "Transport",
    "DirectTransport",
    "transport_for",
    "aclose",
    # ledger, budget, record
    "CallLedger",
    "Budget",
    "RetryPolicy",
    "current_ledger",
    "use_ledger",
    "reset_ledger",
    "request_digest",
    "CallRecord",
    "SqliteCallRecord",
    # values
    "Completion",
    "Choice",
    "TokenLogprob",
    "Usage",
    "Message",
    "completion_from_openai",
    "wire",  # the OpenAI wire format: response bodies, chunks, errors, usage
    # tracing
    "configure_tracing",
    "JsonLinesSpanExporter",
    "workflow_span",
    # secrets: credentials masked in what is written, files only their owner reads
    "redact",
    "private_file",
    # test doubles
    "FakeModel",
    "FakeRequest",
    # how the simulated server answers (the schema of a workflow's simulate:)
    "SimConfig",
    "Latency",
    "Rule",
    "Statistical",
    "Faults",
]
