"""The workflow spec: pydantic models of a workflow file (``extra="forbid"``).

A file names its models (deployments), its agents, and one ``workflow:`` whose
``kind`` picks a registered pattern (each pattern module defines its own spec and
registers it). ``concilium schema`` prints ``WorkflowSpec``'s JSON Schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from concilium.agents.sim import SimConfig
from concilium.graphs._registry import AnyPatternSpec, pattern_specs


class Strict(BaseModel):
    # no .inf or .nan anywhere: an infinite timeout or latency would hang a run
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CapabilitiesSpec(Strict):
    n: bool = True
    logprobs: bool = True
    tools: bool = False
    structured_output: bool = False


class ModelEntry(Strict):
    """A deployment: a litellm model string and where it is served."""

    model: str = Field(description="litellm model string, e.g. hosted_vllm/gemma-3-270m")
    api_base: str | list[str] | None = Field(
        default=None, description="one URL or a list of replica URLs"
    )
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable that holds the API key"
    )
    capabilities: CapabilitiesSpec = Field(default_factory=CapabilitiesSpec)
    mode: Literal["chat", "completion"] = Field(
        default="chat",
        description="chat (instruction-tuned, /v1/chat/completions) or completion (a base "
        "model: a few-shot prompt over /v1/completions, stopped at a newline)",
    )
    max_concurrency: int = Field(default=256, ge=1, le=65_536)
    transport: Literal["auto", "direct", "litellm"] = "auto"
    timeout: float = Field(default=120.0, gt=0, le=86_400, description="seconds per request")
    ttft_timeout: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="streamed calls: seconds to the first event and between events, what "
        "catches a hung server. Non-streamed calls: not applied (a whole reply's first byte "
        "comes when it is complete); timeout bounds them",
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, le=3_600, description="seconds to open a connection"
    )
    routing: Literal["least_loaded", "affinity", "round_robin"] = Field(
        default="least_loaded",
        description="how calls pick among replicas (affinity: same prompt, same replica)",
    )
    load_metrics: bool = Field(
        default=False, description="also route by each replica's vLLM /metrics (waiting, KV cache)"
    )
    max_response_bytes: int = Field(
        default=16 * 2**20,
        ge=1024,
        le=2**31,
        description="the most bytes one reply may bring (16 MiB), counted after decompression; "
        "a larger reply is a malformed-reply error",
    )
    hedge_after: float | None = Field(
        default=None,
        gt=0,
        le=3_600,
        description="off by default; seconds after which a request with no reply yet is sent "
        "again to another ready replica (the first reply wins, the other is cancelled; each "
        "copy counts against the budget). Non-streamed calls only: their first byte is the "
        "whole reply, so set it above the usual reply time",
    )


class AgentEntry(Strict):
    """An agent: a model, a system prompt and sampling parameters."""

    model: str = Field(description="a key of models:")
    system: str | None = Field(default=None, description="system prompt text (Jinja, sandboxed)")
    system_prompt: str | None = Field(default=None, description="system prompt template name")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stop: list[str] | None = Field(
        default=None, max_length=16, description='stop sequences (completion mode: ["\\n"])'
    )
    prompt: str | None = Field(
        default=None,
        description="completion mode: the few-shot prompt (Jinja, sandboxed) around "
        "{{ question }}, the pattern's request",
    )
    prompt_template: str | None = Field(
        default=None, description="completion mode: a template name, e.g. completion/qa"
    )
    output: str | None = Field(
        default=None, description="named output schema, e.g. answer_confidence"
    )


class McpServerEntry(Strict):
    """An MCP server whose tools the workflow may name: a command (stdio) or a URL."""

    command: list[str] | None = Field(
        default=None, min_length=1, description="program and arguments, run over stdio"
    )
    args: list[str] = Field(default_factory=list[str], description="more arguments")
    url: str | None = Field(
        default=None, pattern=r"^https?://", description="a streamable HTTP endpoint (/mcp)"
    )
    timeout: float = Field(default=60.0, gt=0, le=3_600, description="seconds per tool call")

    @model_validator(mode="after")
    def _one_place(self) -> McpServerEntry:
        if (self.command is None) == (self.url is None):
            raise ValueError("give an MCP server either command: [program, ...] or url:, not both")
        return self


class ToolsSpec(Strict):
    """Tools a workflow can name: the calculator always, search over a document folder."""

    mcp: dict[str, McpServerEntry] | None = Field(
        default=None,
        description="MCP servers by name; their tools join the workflow's (the command comes "
        "from this file only)",
    )

    documents: str | None = Field(
        default=None,
        description="folder of .txt/.md files for the search tool, relative to the file; it must "
        "be inside the file's folder (links resolved), or inside a folder listed in the "
        "environment variable CONCILIUM_DOCUMENT_ROOTS",
    )


class BudgetSpec(Strict):
    max_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    count_samples: bool = Field(
        default=False, description="max_calls counts samples: an n=64 request is 64 calls"
    )


class WorkflowSpec(Strict):
    """A workflow file."""

    name: str
    description: str = ""
    models: dict[str, ModelEntry] = Field(min_length=1)
    agents: dict[str, AgentEntry] = Field(min_length=1)
    workflow: AnyPatternSpec
    budget: BudgetSpec | None = None
    tools: ToolsSpec | None = None
    prompts_dir: str | None = Field(
        default=None,
        description="folder of prompt templates (relative to the file) that override built-ins",
    )
    simulate: SimConfig | None = Field(
        default=None, description="how the simulated server answers under --backend sim"
    )


def spec_models() -> list[type[BaseModel]]:
    """Every pydantic model a workflow file is made of."""
    stack: list[type[BaseModel]] = [WorkflowSpec, *pattern_specs()]
    seen: list[type[BaseModel]] = []
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.append(model)
        for f in model.model_fields.values():
            stack.extend(_models_in(f.annotation))
    return seen


def all_field_names() -> set[str]:
    """Every field name of every spec model (for "did you mean" suggestions)."""
    return {name for model in spec_models() for name in model.model_fields}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    for meta in getattr(annotation, "__metadata__", ()) or ():
        found.extend(_models_in(meta))
    return found
