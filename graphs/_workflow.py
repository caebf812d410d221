"""Workflow files: load, check and build them into a ``Graph``.

Every mistake becomes a ``WorkflowError`` naming the file, the line and the fix, with
"did you mean" for misspelt fields, kinds, agents, models, prompts and answer
formats. Names resolve through registries (patterns, output schemas, prompt
templates), never through ``importlib``; no value from the file reaches ``eval``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from pydantic import ValidationError

from concilium._errors import GraphError, PromptError, UserError, WorkflowError
from concilium.agents import OUTPUT_SCHEMAS, Agent, Budget, Capabilities, ModelSpec
from concilium.prompts import PromptLibrary
from concilium.tools import ToolRegistry, builtin_tools

from ._aggregators import answer_format
from ._graph import Graph
from ._runtime import as_agent
from ._spec import (
    PATTERN_KINDS,
    AdaptiveConsistencySpec,
    AgentEntry,
    BestOfNSpec,
    ChainOfAgentsSpec,
    ConfidenceConsistencySpec,
    DebateSpec,
    KnockoutSpec,
    ManagerWorkerSpec,
    MixtureOfAgentsSpec,
    ModelEntry,
    PlanAndExecuteSpec,
    ReactSpec,
    RoundTableSpec,
    SelfConsistencySpec,
    SkeletonOfThoughtSpec,
    SynthesisSpec,
    TreeOfThoughtsSpec,
    UniversalSelfConsistencySpec,
    WorkflowSpec,
    all_field_names,
    spec_models,
)
from ._yaml import line_of, load_yaml

Loc = tuple[Any, ...]


def _suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _fields_for(siblings: Iterable[str]) -> set[str]:
    """The fields of the spec model that best explains the keys next to a typo."""
    keys = set(siblings)
    best = max(spec_models(), key=lambda m: len(keys & set(m.model_fields)))
    return set(best.model_fields) if keys & set(best.model_fields) else all_field_names()


def _format_error(err: Mapping[str, Any], data: Any) -> str:
    kind = err["type"]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in PATTERN_KINDS)]
    where = ".".join(str(p) for p in loc) or "(top level)"
    if kind == "extra_forbidden":
        bad = str(loc[-1]) if loc else "?"
        parent = _at(data, loc[:-1])
        siblings = [k for k in parent if k != bad] if isinstance(parent, dict) else []
        return f"unknown field {bad!r}.{_suggest(bad, _fields_for(siblings))} Remove it or fix its spelling."
    if kind == "missing":
        return f"{where}: this field is required; add it."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = (err.get("ctx") or {}).get("tag", "")
        if kind == "union_tag_not_found":
            return f"{where}: a pattern needs 'kind:', one of {list(PATTERN_KINDS)}."
        return f"{where}: unknown kind {tag!r}.{_suggest(tag, PATTERN_KINDS)} Known kinds: {list(PATTERN_KINDS)}."
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return f"{where}: {err['msg']} (got {shown})."


def _at(data: Any, loc: Iterable[Any]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
    return data


@dataclass
class Workflow:
    """A loaded workflow: its spec, deployments, agents, and the built graph."""

    spec: WorkflowSpec
    graph: Graph
    models: dict[str, ModelSpec]
    agents: dict[str, Agent]
    file: str = "<workflow>"
    budget: Budget | None = None
    sim: dict[str, Any] | None = field(default=None, repr=False)
    lines: dict[Any, int] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name


def parse_workflow(text: str, file: str = "<workflow>") -> tuple[WorkflowSpec, Any, dict[Any, int]]:
    """YAML text -> validated ``WorkflowSpec`` (plus the raw data and line map)."""
    data, lines = load_yaml(text, file)
    if not isinstance(data, dict):
        raise WorkflowError(
            "a workflow file must be a mapping with name, models, agents and workflow",
            file=file,
            line=1,
        )
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Report the first error by position in the file; union members often
        # produce several errors for one mistake, the first line is the real one.
        first = min(errors, key=lambda e: line_of(data, lines, e["loc"]) or 0)
        loc = first["loc"]
        if first["type"] == "union_tag_invalid":
            loc = (*loc, "kind")  # point at the kind: line, not the mapping
        raise WorkflowError(_format_error(first, data), file=file, line=line_of(data, lines, loc)) from None
    return spec, data, lines


def load_workflow(
    path: str | Path, *, api_base: str | Sequence[str] | None = None, tools: ToolRegistry | None = None
) -> Workflow:
    """Read, validate and build a workflow file.

    Args:
        path: the YAML file.
        api_base: serve every model from this OpenAI-compatible URL instead
            (the CLI's ``--backend URL`` and ``--backend sim``).
        tools: your own tools, which the file may then name (besides the built-ins).

    Example:
        >>> # wf = load_workflow("examples/debate.yaml"); run_sync(wf.graph, "What is 12 * 7?")
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError("no such file; check the path", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read it: {exc}", file=file) from None
    spec, data, lines = parse_workflow(text, file)
    return build_workflow(spec, file=file, lines=lines, data=data, api_base=api_base, tools=tools)


def build_workflow(
    spec: WorkflowSpec,
    *,
    file: str = "<workflow>",
    lines: dict[Any, int] | None = None,
    data: Any = None,
    api_base: str | Sequence[str] | None = None,
    base_dir: Path | None = None,
    tools: ToolRegistry | None = None,
) -> Workflow:
    """Resolve names and build the graph of a validated spec."""
    lines = lines or {}

    def fail(message: str, loc: Loc) -> WorkflowError:
        return WorkflowError(message, file=file, line=line_of(data, lines, loc) if data else None)

    base = base_dir or (Path(file).parent if file != "<workflow>" else Path("."))
    prompts = PromptLibrary([base / spec.prompts_dir] if spec.prompts_dir else [])
    if spec.prompts_dir and not (base / spec.prompts_dir).is_dir():
        raise fail(f"prompts_dir {spec.prompts_dir!r} is not a folder next to the file", ("prompts_dir",))

    models = {name: _model(name, entry, api_base, fail) for name, entry in spec.models.items()}
    agents = {
        name: _agent(name, entry, models, prompts, fail) for name, entry in spec.agents.items()
    }
    builder = _Builder(agents, prompts, fail, _tools(spec, base, tools, fail))
    graph = builder.pattern(spec.workflow, ("workflow",), spec.name)
    budget = Budget(spec.budget.max_calls, spec.budget.max_tokens) if spec.budget else None
    return Workflow(spec, graph, models, agents, file, budget, spec.simulate, lines)


def _model(
    name: str, entry: ModelEntry, api_base: str | Sequence[str] | None, fail: Callable[[str, Loc], WorkflowError]
) -> ModelSpec:
    api_key = None
    if entry.api_key_env:
        api_key = os.environ.get(entry.api_key_env)
        if api_key is None:
            raise fail(
                f"model {name!r} reads its API key from ${entry.api_key_env}, which is not set; "
                f"export {entry.api_key_env}=...",
                ("models", name, "api_key_env"),
            )
    spec = ModelSpec(
        entry.model,
        api_base=entry.api_base,
        api_key=api_key,
        capabilities=Capabilities(**entry.capabilities.model_dump()),
        max_concurrency=entry.max_concurrency,
        transport=entry.transport,
        timeout=entry.timeout,
        routing=entry.routing,
        load_metrics=entry.load_metrics,
    )
    if api_base is not None:
        spec = spec.with_api_base(api_base)
    return spec


def _tools(spec: WorkflowSpec, base: Path, given: ToolRegistry | None, fail: Callable[[str, Loc], WorkflowError]) -> ToolRegistry:
    """The built-in tools (search only with a documents folder), then the caller's."""
    documents = None
    if spec.tools and spec.tools.documents:
        documents = base / spec.tools.documents
        if not documents.is_dir():
            raise fail(f"tools.documents {spec.tools.documents!r} is not a folder next to the file", ("tools", "documents"))
    try:
        registry = builtin_tools(documents)
        for name in given.names() if given else ():
            registry.add(given.get(name))  # type: ignore[union-attr]
    except UserError as exc:
        raise fail(str(exc), ("tools",)) from None
    return registry


def _agent(
    name: str,
    entry: AgentEntry,
    models: Mapping[str, ModelSpec],
    prompts: PromptLibrary,
    fail: Callable[[str, Loc], WorkflowError],
) -> Agent:
    if entry.model not in models:
        raise fail(
            f"agent {name!r} uses model {entry.model!r}, which is not under models:."
            f"{_suggest(entry.model, models)} Known models: {sorted(models)}.",
            ("agents", name, "model"),
        )
    if entry.system and entry.system_prompt:
        raise fail(f"agent {name!r}: give system or system_prompt, not both", ("agents", name))
    try:
        if entry.system_prompt:
            system = prompts.render(entry.system_prompt, agent=name)
        elif entry.system:
            system = prompts.render_string(entry.system, agent=name)
        else:
            system = None
    except PromptError as exc:
        raise fail(str(exc), ("agents", name)) from None
    output = None
    if entry.output is not None:
        output = OUTPUT_SCHEMAS.get(entry.output)
        if output is None:
            raise fail(
                f"unknown output schema {entry.output!r}.{_suggest(entry.output, OUTPUT_SCHEMAS)} "
                f"Known: {sorted(OUTPUT_SCHEMAS)}.",
                ("agents", name, "output"),
            )
    return Agent(
        name,
        models[entry.model],
        system=system,
        temperature=entry.temperature,
        top_p=entry.top_p,
        max_tokens=entry.max_tokens,
        seed=entry.seed,
        output=output,
        logprobs=entry.logprobs,
        top_logprobs=entry.top_logprobs,
    )


class _Builder:
    """Turns pattern specs into graphs, resolving agent slots (names or nested patterns)."""

    def __init__(
        self,
        agents: Mapping[str, Agent],
        prompts: PromptLibrary,
        fail: Callable[[str, Loc], WorkflowError],
        tools: ToolRegistry | None = None,
    ):
        self.tools = tools or ToolRegistry()
        self.agents = agents
        self.prompts = prompts
        self.fail = fail
        self.builders: dict[str, Callable[[Any, Loc, str], Graph]] = {
            kind: getattr(self, kind) for kind in PATTERN_KINDS
        }

    def pattern(self, spec: Any, loc: Loc, default_name: str) -> Graph:
        try:
            return self.builders[spec.kind](spec, loc, spec.name or default_name)
        except GraphError as exc:  # a pattern's own check (repeated names, sizes)
            raise self.fail(str(exc), loc) from None

    def plain_agent(self, value: str, loc: Loc, why: str) -> Agent:
        agent = self.slot(value, loc)
        if not isinstance(agent, Agent):
            raise self.fail(f"this slot needs an agent name, not a pattern: {why}", loc)
        return agent

    def optional(self, value: Any, loc: Loc) -> Any:
        return None if value is None else self.slot(value, loc)

    def slot(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, str):
            agent = self.agents.get(value)
            if agent is None:
                raise self.fail(
                    f"no agent named {value!r} under agents:.{_suggest(value, self.agents)} "
                    f"Known agents: {sorted(self.agents)}.",
                    loc,
                )
            return agent
        inner = self.pattern(value, loc, f"{value.kind}_{loc[-1]}")
        return as_agent(inner)

    def answer(self, value: Any, loc: Loc) -> Any:
        try:
            return answer_format(value)
        except ValueError as exc:
            raise self.fail(str(exc), (*loc, "answer")) from None

    def template(self, name: str, loc: Loc) -> str:
        if name not in self.prompts.names():
            raise self.fail(
                f"no prompt template {name!r}.{_suggest(name, self.prompts.names())} "
                f"Templates: {self.prompts.names()}.",
                loc,
            )
        return name

    def self_consistency(self, spec: SelfConsistencySpec, loc: Loc, name: str) -> Graph:
        from .patterns import self_consistency

        return self_consistency(
            self.slot(spec.agent, (*loc, "agent")),
            samples=spec.samples,
            answer=self.answer(spec.answer, loc),
            prompt=self.template(spec.prompt, (*loc, "prompt")),
            prompts=self.prompts,
            name=name,
        )

    def debate(self, spec: DebateSpec, loc: Loc, name: str) -> Graph:
        from .patterns import debate

        slots = [self.slot(a, (*loc, "agents", i)) for i, a in enumerate(spec.agents)]
        names = [s.name for s in slots]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise self.fail(
                    f"agent {n!r} appears twice in this debate; each debater needs its own "
                    "agent (copy it under agents: with another name)",
                    (*loc, "agents", i),
                )
        p = spec.prompts
        return debate(
            slots,
            rounds=spec.rounds,
            answer=self.answer(spec.answer, loc),
            prompts=self.prompts,
            initial_prompt=self.template(p.initial, (*loc, "prompts", "initial")),
            round_prompt=self.template(p.round, (*loc, "prompts", "round")),
            reflect_prompt=self.template(p.reflect, (*loc, "prompts", "reflect")),
            name=name,
        )

    def round_table(self, spec: RoundTableSpec, loc: Loc, name: str) -> Graph:
        from .patterns import round_table

        slots = [self.slot(a, (*loc, "agents", i)) for i, a in enumerate(spec.agents)]
        return round_table(slots, rounds=spec.rounds, examples=spec.examples,
                           answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name)  # fmt: skip

    def mixture_of_agents(self, spec: MixtureOfAgentsSpec, loc: Loc, name: str) -> Graph:
        from .patterns import mixture_of_agents

        proposers: Any
        if spec.proposers and isinstance(spec.proposers[0], list):
            proposers = [[self.slot(a, (*loc, "proposers", i, j)) for j, a in enumerate(layer)]
                         for i, layer in enumerate(spec.proposers)]  # fmt: skip
        else:
            proposers = [self.slot(a, (*loc, "proposers", i)) for i, a in enumerate(spec.proposers)]
        return mixture_of_agents(
            proposers, self.slot(spec.aggregator, (*loc, "aggregator")), layers=spec.layers,
            judge=self.optional(spec.judge, (*loc, "judge")), k=spec.k, early_stop=spec.early_stop,
            answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name,
        )  # fmt: skip

    def manager_worker(self, spec: ManagerWorkerSpec, loc: Loc, name: str) -> Graph:
        from .patterns import manager_worker

        manager = self.plain_agent(spec.manager, (*loc, "manager"), "the manager plans with structured output")
        workers = [self.slot(a, (*loc, "workers", i)) for i, a in enumerate(spec.workers)]
        return manager_worker(manager, workers, max_subtasks=spec.max_subtasks,
                              answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name)  # fmt: skip

    def chain_of_agents(self, spec: ChainOfAgentsSpec, loc: Loc, name: str) -> Graph:
        from .patterns import chain_of_agents

        return chain_of_agents(
            self.slot(spec.worker, (*loc, "worker")), self.slot(spec.manager, (*loc, "manager")),
            chunk_words=spec.chunk_words, query=spec.query, answer=self.answer(spec.answer, loc),
            prompts=self.prompts, name=name,
        )  # fmt: skip

    def best_of_n(self, spec: BestOfNSpec, loc: Loc, name: str) -> Graph:
        from .patterns import best_of_n

        return best_of_n(
            self.slot(spec.generator, (*loc, "generator")), self.slot(spec.judge, (*loc, "judge")),
            n=spec.n, mode=spec.mode, weighted=spec.weighted, answer=self.answer(spec.answer, loc),
            prompts=self.prompts, name=name,
        )  # fmt: skip

    def knockout(self, spec: KnockoutSpec, loc: Loc, name: str) -> Graph:
        from .patterns import knockout

        return knockout(
            self.slot(spec.generator, (*loc, "generator")), self.slot(spec.judge, (*loc, "judge")),
            n=spec.n, seed=spec.seed, answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name,
        )  # fmt: skip

    def universal_self_consistency(self, spec: UniversalSelfConsistencySpec, loc: Loc, name: str) -> Graph:
        from .patterns import universal_self_consistency

        return universal_self_consistency(
            self.slot(spec.generator, (*loc, "generator")), self.slot(spec.selector, (*loc, "selector")),
            n=spec.n, answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name,
        )  # fmt: skip

    def adaptive_consistency(self, spec: AdaptiveConsistencySpec, loc: Loc, name: str) -> Graph:
        from .patterns import adaptive_consistency

        return adaptive_consistency(
            self.slot(spec.agent, (*loc, "agent")), max_samples=spec.max_samples, parallel=spec.parallel,
            rule=spec.rule, threshold=spec.threshold, answer=self.answer(spec.answer, loc),
            prompts=self.prompts, name=name,
        )  # fmt: skip

    def confidence_consistency(self, spec: ConfidenceConsistencySpec, loc: Loc, name: str) -> Graph:
        from .patterns import confidence_consistency

        allowed = ("mean", "min", "prod") if spec.method == "soft" else ("lowest_group", "bottom_10", "tail", "mean")
        if spec.score not in allowed:
            raise self.fail(
                f"score {spec.score!r} does not go with method {spec.method!r}: deepconf takes "
                "lowest_group, bottom_10, tail or mean; soft takes mean, min or prod",
                (*loc, "score"),
            )
        agent = self.plain_agent(spec.agent, (*loc, "agent"), "its token logprobs are read")
        return confidence_consistency(
            agent, samples=spec.samples, method=spec.method, score=spec.score, window=spec.window,
            keep_percent=spec.keep_percent, top_logprobs=spec.top_logprobs,
            answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name,
        )  # fmt: skip

    def synthesis(self, spec: SynthesisSpec, loc: Loc, name: str) -> Graph:
        from .patterns import synthesis

        return synthesis(
            self.slot(spec.explorer, (*loc, "explorer")), self.slot(spec.synthesizer, (*loc, "synthesizer")),
            samples=spec.samples, answer=self.answer(spec.answer, loc), prompts=self.prompts, name=name,
        )  # fmt: skip

    def skeleton_of_thought(self, spec: SkeletonOfThoughtSpec, loc: Loc, name: str) -> Graph:
        from .patterns import skeleton_of_thought

        return skeleton_of_thought(
            self.slot(spec.agent, (*loc, "agent")), expander=self.optional(spec.expander, (*loc, "expander")),
            max_points=spec.max_points, prompts=self.prompts, name=name,
        )  # fmt: skip

    def tree_of_thoughts(self, spec: TreeOfThoughtsSpec, loc: Loc, name: str) -> Graph:
        from .patterns import tree_of_thoughts

        return tree_of_thoughts(
            self.slot(spec.proposer, (*loc, "proposer")), self.slot(spec.evaluator, (*loc, "evaluator")),
            depth=spec.depth, breadth=spec.breadth, keep=spec.keep, n_evaluate=spec.n_evaluate,
            prompts=self.prompts, name=name,
        )  # fmt: skip

    def tool_set(self, names: list[str], loc: Loc) -> ToolRegistry:
        for i, name in enumerate(names):
            if name not in self.tools:
                raise self.fail(
                    f"no tool named {name!r}.{_suggest(name, self.tools.names())} Tools: {self.tools.names()} "
                    "(search needs tools: {documents: FOLDER}; your own come from load_workflow(..., tools=...))",
                    (*loc, "tools", i),
                )
        return self.tools.subset(names)

    def plan_and_execute(self, spec: PlanAndExecuteSpec, loc: Loc, name: str) -> Graph:
        from .patterns import plan_and_execute

        return plan_and_execute(
            self.plain_agent(spec.planner, (*loc, "planner"), "the planner streams its plan"),
            self.plain_agent(spec.joiner, (*loc, "joiner"), "the joiner reads the results"),
            self.tool_set(spec.tools, loc), max_replans=spec.max_replans, plan_format=spec.plan_format,
            on_failure=spec.on_failure, prompts=self.prompts, name=name,
        )  # fmt: skip

    def react(self, spec: ReactSpec, loc: Loc, name: str) -> Graph:
        from .patterns import react

        return react(self.plain_agent(spec.agent, (*loc, "agent"), "it calls tools turn by turn"),
                     self.tool_set(spec.tools, loc), max_steps=spec.max_steps, prompts=self.prompts, name=name)  # fmt: skip
