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
    routing: Literal["least_loaded", "affinity", "round_robin"] = Field(
        default="least_loaded", description="how calls pick among replicas (affinity: same prompt, same replica)"
    )
    load_metrics: bool = Field(default=False, description="also route by each replica's vLLM /metrics (waiting, KV cache)")


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


class RoundTableSpec(Strict):
    """ReConcile: agents answer with confidence, see the grouped answers, weighted vote."""

    kind: Literal["round_table"]
    name: str | None = None
    agents: list[AgentSlot] = Field(min_length=2)
    rounds: int = Field(default=3, ge=1, le=20)
    examples: dict[str, list[str]] = Field(default_factory=dict, description="convincing examples per agent name")
    answer: AnswerSpec = "text"


class MixtureOfAgentsSpec(Strict):
    """Layers of proposers, then an aggregator; a judge makes it Sparse MoA."""

    kind: Literal["mixture_of_agents"]
    name: str | None = None
    proposers: list[AgentSlot] | list[list[AgentSlot]] = Field(min_length=1)
    aggregator: AgentSlot
    layers: int = Field(default=3, ge=1, le=20)
    judge: AgentSlot | None = None
    k: int = Field(default=2, ge=1)
    early_stop: bool = True
    answer: AnswerSpec = "text"


class ManagerWorkerSpec(Strict):
    """A manager plans sub-tasks, workers run them concurrently, the manager combines."""

    kind: Literal["manager_worker"]
    name: str | None = None
    manager: str = Field(description="an agent name (it plans with structured output)")
    workers: list[AgentSlot] = Field(min_length=1)
    max_subtasks: int = Field(default=5, ge=1, le=64)
    answer: AnswerSpec = "text"


class ChainOfAgentsSpec(Strict):
    """Workers read a long input chunk by chunk passing a summary on; the manager answers."""

    kind: Literal["chain_of_agents"]
    name: str | None = None
    worker: AgentSlot
    manager: AgentSlot
    chunk_words: int = Field(default=1500, ge=1)
    query: str | None = None
    answer: AnswerSpec = "text"


class BestOfNSpec(Strict):
    """N candidates, each scored by a judge (score 1-10, or a Yes/No verifier)."""

    kind: Literal["best_of_n"]
    name: str | None = None
    generator: AgentSlot
    judge: AgentSlot
    n: int = Field(default=4, ge=1, le=256)
    mode: Literal["score", "verifier"] = "score"
    weighted: bool = False
    answer: AnswerSpec = "boxed"


class KnockoutSpec(Strict):
    """N candidates in a single-elimination bracket under a pairwise judge."""

    kind: Literal["knockout"]
    name: str | None = None
    generator: AgentSlot
    judge: AgentSlot
    n: int = Field(default=8, ge=1, le=256)
    seed: int = 0
    answer: AnswerSpec = "boxed"


class UniversalSelfConsistencySpec(Strict):
    """N responses; a selector names the most consistent one."""

    kind: Literal["universal_self_consistency"]
    name: str | None = None
    generator: AgentSlot
    selector: AgentSlot
    n: int = Field(default=8, ge=1, le=64)
    answer: AnswerSpec = "text"


class AdaptiveConsistencySpec(Strict):
    """Samples until a stopping rule says the majority is settled."""

    kind: Literal["adaptive_consistency"]
    name: str | None = None
    agent: AgentSlot
    max_samples: int = Field(default=40, ge=1, le=4096)
    parallel: int = Field(default=4, ge=1, le=256)
    rule: Literal["beta", "majority", "entropy"] = "beta"
    threshold: float | None = Field(default=None, gt=0, le=1)
    answer: AnswerSpec = "boxed"


class ConfidenceConsistencySpec(Strict):
    """N samples weighted by their token-logprob confidence (DeepConf), or the best one (soft SC)."""

    kind: Literal["confidence_consistency"]
    name: str | None = None
    agent: str = Field(description="an agent name (its logprobs are read)")
    samples: int = Field(default=8, ge=1, le=4096)
    method: Literal["deepconf", "soft"] = "deepconf"
    score: Literal["lowest_group", "bottom_10", "tail", "mean", "min", "prod"] = "lowest_group"
    window: int = Field(default=2048, ge=1)
    keep_percent: float | None = Field(default=None, gt=0, le=100)
    top_logprobs: int = Field(default=20, ge=1, le=20)
    answer: AnswerSpec = "boxed"


class SynthesisSpec(Strict):
    """Explorers draw N attempts; a synthesizer reads them all and writes the answer."""

    kind: Literal["synthesis"]
    name: str | None = None
    explorer: AgentSlot
    synthesizer: AgentSlot
    samples: int = Field(default=4, ge=1, le=256)
    answer: AnswerSpec = "boxed"


class SkeletonOfThoughtSpec(Strict):
    """An outline, then every point expanded concurrently, joined in order."""

    kind: Literal["skeleton_of_thought"]
    name: str | None = None
    agent: AgentSlot
    expander: AgentSlot | None = None
    max_points: int = Field(default=10, ge=1, le=50)


class TreeOfThoughtsSpec(Strict):
    """Breadth-first search over reasoning steps: propose, value, keep the best."""

    kind: Literal["tree_of_thoughts"]
    name: str | None = None
    proposer: AgentSlot
    evaluator: AgentSlot
    depth: int = Field(default=3, ge=1, le=20)
    breadth: int = Field(default=5, ge=1, le=50)
    keep: int = Field(default=5, ge=1, le=50)
    n_evaluate: int = Field(default=3, ge=1, le=20)


class PlanAndExecuteSpec(Strict):
    """LLMCompiler: a planner's DAG of tool calls runs in parallel; a joiner answers or replans."""

    kind: Literal["plan_and_execute"]
    name: str | None = None
    planner: str = Field(description="an agent name")
    joiner: str = Field(description="an agent name")
    tools: list[str] = Field(min_length=1, description="tool names (see tools: and the built-ins)")
    max_replans: int = Field(default=2, ge=0, le=10)
    plan_format: Literal["text", "json"] = "text"
    on_failure: Literal["skip_dependents", "cancel"] = "skip_dependents"


class ReactSpec(Strict):
    """ReAct: one tool call per model turn (the sequential baseline)."""

    kind: Literal["react"]
    name: str | None = None
    agent: str = Field(description="an agent name")
    tools: list[str] = Field(min_length=1)
    max_steps: int = Field(default=8, ge=1, le=50)


class ToolsSpec(Strict):
    """Tools a workflow can name: the calculator always, search over a document folder."""

    documents: str | None = Field(default=None, description="folder of .txt/.md files for the search tool, relative to the file")


PatternSpec = Annotated[
    Union[
        SelfConsistencySpec, DebateSpec, RoundTableSpec, MixtureOfAgentsSpec, ManagerWorkerSpec,
        ChainOfAgentsSpec, BestOfNSpec, KnockoutSpec, UniversalSelfConsistencySpec,
        AdaptiveConsistencySpec, ConfidenceConsistencySpec, SynthesisSpec, SkeletonOfThoughtSpec,
        TreeOfThoughtsSpec, PlanAndExecuteSpec, ReactSpec,
    ],
    Field(discriminator="kind"),
]  # fmt: skip
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
    tools: ToolsSpec | None = None
    prompts_dir: str | None = Field(
        default=None, description="folder of prompt templates (relative to the file) that override built-ins"
    )
    simulate: dict[str, Any] | None = Field(
        default=None,
        description="how the simulated server answers under --backend sim "
        "(concilium.serving.SimConfig; checked by the CLI, which owns the backends)",
    )


PATTERN_SPECS: tuple[type[BaseModel], ...] = (
    SelfConsistencySpec, DebateSpec, RoundTableSpec, MixtureOfAgentsSpec, ManagerWorkerSpec,
    ChainOfAgentsSpec, BestOfNSpec, KnockoutSpec, UniversalSelfConsistencySpec, AdaptiveConsistencySpec,
    ConfidenceConsistencySpec, SynthesisSpec, SkeletonOfThoughtSpec, TreeOfThoughtsSpec,
    PlanAndExecuteSpec, ReactSpec,
)  # fmt: skip
for _spec in PATTERN_SPECS:
    _spec.model_rebuild()
WorkflowSpec.model_rebuild()

PATTERN_KINDS = tuple(s.model_fields["kind"].annotation.__args__[0] for s in PATTERN_SPECS)


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
