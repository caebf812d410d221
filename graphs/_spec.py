"""The workflow spec: pydantic models of a workflow file (``extra="forbid"``).

A file names its models (deployments), its agents, and one ``workflow:`` whose
``kind`` picks a pattern. An agent slot of a pattern holds an agent's name or, for
nesting, another pattern. ``concilium schema`` prints ``WorkflowSpec``'s JSON Schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    max_concurrency: int = Field(default=256, ge=1)
    transport: Literal["auto", "direct", "litellm"] = "auto"
    timeout: float = Field(default=120.0, gt=0)


class AgentEntry(Strict):
    """An agent: a model, a system prompt and sampling parameters."""

    model: str = Field(description="a key of models:")
    system: str | None = Field(default=None, description="system prompt text (Jinja, sandboxed)")
    system_prompt: str | None = Field(default=None, description="system prompt template name")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    output: str | None = Field(default=None, description="named output schema, e.g. answer_confidence")


AnswerSpec = Union[str, dict[str, str]]


class SelfConsistencySpec(Strict):
    """N samples of one agent, majority vote."""

    kind: Literal["self_consistency"]
    name: str | None = None
    agent: AgentSlot
    samples: int = Field(default=5, ge=1, le=4096)
    answer: AnswerSpec = "boxed"
    prompt: str = "self_consistency/solve"


class DebatePrompts(Strict):
    initial: str = "debate/initial"
    round: str = "debate/round"
    reflect: str = "debate/reflect"


class DebateSpec(Strict):
    """Du et al. multi-agent debate: N agents, R rounds counting the first."""

    kind: Literal["debate"]
    name: str | None = None
    agents: list[AgentSlot] = Field(min_length=1)
    rounds: int = Field(default=2, ge=1, le=100)
    answer: AnswerSpec = "boxed"
    prompts: DebatePrompts = Field(default_factory=DebatePrompts)


PatternSpec = Annotated[Union[SelfConsistencySpec, DebateSpec], Field(discriminator="kind")]
AgentSlot = Union[str, PatternSpec]


class BudgetSpec(Strict):
    max_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)


class WorkflowSpec(Strict):
    """A workflow file."""

    name: str
    description: str = ""
    models: dict[str, ModelEntry] = Field(min_length=1)
    agents: dict[str, AgentEntry] = Field(min_length=1)
    workflow: PatternSpec
    budget: BudgetSpec | None = None
    prompts_dir: str | None = Field(
        default=None, description="folder of prompt templates (relative to the file) that override built-ins"
    )
    simulate: dict[str, Any] | None = Field(
        default=None,
        description="how the simulated server answers under --backend sim "
        "(concilium.serving.SimConfig; checked by the CLI, which owns the backends)",
    )


SelfConsistencySpec.model_rebuild()
DebateSpec.model_rebuild()
WorkflowSpec.model_rebuild()

PATTERN_KINDS = ("self_consistency", "debate")


def spec_models() -> list[type[BaseModel]]:
    """Every pydantic model a workflow file is made of."""
    stack: list[type[BaseModel]] = [WorkflowSpec]
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
