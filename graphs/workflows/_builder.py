"""Resolving a workflow's names: deployments, agents, tools, and the ``Builder``
every pattern's registered build function receives (agent slots, nested patterns,
answer formats, prompt templates, tool subsets, errors with file:line)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from concilium._errors import GraphError, PromptError, UserError, WorkflowError
from concilium.agents import Agent, AnswerConfidence, Capabilities, Message, ModelSpec
from concilium.graphs import Graph, as_agent
from concilium.graphs._aggregators import answer_format
from concilium.graphs._kit import last_user_text
from concilium.graphs._registry import SlotAgent, pattern_kinds, registered_pattern
from concilium.graphs.kit import AnswerFormat, AnswerSpec, PatternSpec
from concilium.prompts import PromptLibrary
from concilium.tools import McpServer, ToolRegistry, builtin_tools, mcp_tools

from ._spec import AgentEntry, McpServerEntry, ModelEntry

# the output schemas a workflow file names (``output: answer_confidence``)
OUTPUT_SCHEMAS: dict[str, type[BaseModel]] = {"answer_confidence": AnswerConfidence}

Loc = tuple[Any, ...]
Fail = Callable[[str, Loc], WorkflowError]


def suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def model_from_entry(
    name: str, entry: ModelEntry, api_base: str | Sequence[str] | None, fail: Fail
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
        capabilities=Capabilities(**entry.capabilities.model_dump(), mode=entry.mode),
        max_concurrency=entry.max_concurrency,
        transport=entry.transport,
        timeout=entry.timeout,
        ttft_timeout=entry.ttft_timeout,
        connect_timeout=entry.connect_timeout,
        routing=entry.routing,
        load_metrics=entry.load_metrics,
        hedge_after=entry.hedge_after,
        max_response_bytes=entry.max_response_bytes,
    )
    if api_base is not None:
        spec = spec.with_api_base(api_base)
    return spec


DOCUMENT_ROOTS_ENV = "CONCILIUM_DOCUMENT_ROOTS"


def document_folder(documents: str, base: Path, fail: Fail) -> Path:
    """``tools.documents`` read from the workflow's folder ``base``. With links resolved
    it must lie inside ``base``, or inside a folder the user lists in the environment
    variable ``CONCILIUM_DOCUMENT_ROOTS``: a workflow file someone else wrote cannot
    point the search tool at ``..`` or ``/etc`` and grant itself that access."""
    folder = base / documents
    if not folder.is_dir():
        raise fail(
            f"tools.documents {documents!r} is not a folder next to the file",
            ("tools", "documents"),
        )
    real = folder.resolve()
    allowed = os.environ.get(DOCUMENT_ROOTS_ENV, "").split(os.pathsep)
    roots = [base.resolve(), *(Path(p).resolve() for p in allowed if p.strip())]
    if not any(real.is_relative_to(root) for root in roots):
        raise fail(
            f"tools.documents {documents!r} is {real}, outside the workflow's folder {roots[0]}; "
            "put the documents in a folder next to the workflow file, or allow this folder by "
            f"listing it (or a folder above it) in the environment variable {DOCUMENT_ROOTS_ENV} "
            f"(folders separated by {os.pathsep!r})",
            ("tools", "documents"),
        )
    return folder


def tools_for(
    documents: str | None,
    base: Path,
    given: ToolRegistry | None,
    fail: Fail,
    mcp: Mapping[str, McpServerEntry] | None = None,
) -> ToolRegistry:
    """The built-in tools (search only with a documents folder), the tools of the
    file's MCP servers, then the caller's."""
    folder = document_folder(documents, base, fail) if documents else None
    try:
        registry = builtin_tools(folder)
        for server_name, entry in (mcp or {}).items():
            server = McpServer(
                command=entry.command or (),
                args=entry.args,
                url=entry.url,
                cwd=str(base.resolve()),
                timeout=entry.timeout,
            )
            try:
                for tool in mcp_tools(server_name, server):
                    registry.add(tool)
            except UserError as exc:
                raise fail(str(exc), ("tools", "mcp", server_name)) from None
        if given is not None:
            for name in given.names():
                registry.add(given.get(name))
    except WorkflowError:  # already says where (an MCP server's line)
        raise
    except UserError as exc:
        raise fail(str(exc), ("tools",)) from None
    return registry


def agent_from_entry(
    name: str,
    entry: AgentEntry,
    models: Mapping[str, ModelSpec],
    prompts: PromptLibrary,
    fail: Fail,
) -> Agent:
    if entry.model not in models:
        raise fail(
            f"agent {name!r} uses model {entry.model!r}, which is not under models:."
            f"{suggest(entry.model, models)} Known models: {sorted(models)}.",
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
        field = "system_prompt" if entry.system_prompt else "system"
        raise fail(str(exc), ("agents", name, field)) from None
    output = None
    if entry.output is not None:
        output = OUTPUT_SCHEMAS.get(entry.output)
        if output is None:
            raise fail(
                f"unknown output schema {entry.output!r}.{suggest(entry.output, OUTPUT_SCHEMAS)} "
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
        stop=tuple(entry.stop) if entry.stop is not None else None,
        prompt=completion_prompt(name, entry, system, prompts, fail),
    )


def completion_prompt(
    name: str, entry: AgentEntry, system: str | None, prompts: PromptLibrary, fail: Fail
) -> Callable[[Sequence[Message]], str] | None:
    """The agent's ``prompt:``/``prompt_template:`` as a function of the pattern's
    messages; the template sees ``question`` (the last user message), ``messages``,
    ``system`` and ``agent``. It is tried once here so a broken one fails at load."""
    if entry.prompt and entry.prompt_template:
        raise fail(f"agent {name!r}: give prompt or prompt_template, not both", ("agents", name))
    if not (entry.prompt or entry.prompt_template):
        return None
    field = "prompt" if entry.prompt else "prompt_template"

    def render(messages: Sequence[Message]) -> str:
        question = last_user_text(messages)
        values = {"question": question, "messages": list(messages), "system": system, "agent": name}
        if entry.prompt_template:
            return prompts.render(entry.prompt_template, **values)
        return prompts.render_string(entry.prompt or "", **values)

    try:
        render([{"role": "user", "content": "?"}])
    except PromptError as exc:
        raise fail(str(exc), ("agents", name, field)) from None
    return render


class PatternBuilder:
    """Builds pattern specs into graphs through the registry, one ``Builder`` view
    per pattern (its location and name), resolving agent slots and nested patterns."""

    def __init__(
        self, agents: Mapping[str, Agent], prompts: PromptLibrary, fail: Fail, tools: ToolRegistry
    ) -> None:
        self.agents = agents
        self.prompts = prompts
        self.fail = fail
        self.tool_registry = tools

    def pattern(self, spec: PatternSpec, loc: Loc, default_name: str) -> Graph:
        registration = registered_pattern(spec.kind)
        if registration is None:  # validated specs always have a registered kind
            raise self.fail(
                f"unknown kind {spec.kind!r}{suggest(spec.kind, pattern_kinds())}", (*loc, "kind")
            )
        try:
            return registration.build(spec, _Scoped(self, loc, spec.name or default_name))
        except GraphError as exc:  # a pattern's own check (repeated names, sizes)
            raise self.fail(str(exc), loc) from None

    def slot(self, value: str | PatternSpec, loc: Loc) -> SlotAgent:
        if isinstance(value, str):
            agent = self.agents.get(value)
            if agent is None:
                raise self.fail(
                    f"no agent named {value!r} under agents:.{suggest(value, self.agents)} "
                    f"Known agents: {sorted(self.agents)}.",
                    loc,
                )
            return agent
        return as_agent(self.pattern(value, loc, f"{value.kind}_{loc[-1]}"))


class _Scoped:
    """The ``Builder`` a build function receives: paths are relative to its pattern."""

    def __init__(self, parent: PatternBuilder, loc: Loc, name: str) -> None:
        self._parent = parent
        self._loc = loc
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def prompts(self) -> PromptLibrary:
        return self._parent.prompts

    def fail(self, message: str, *path: str | int) -> WorkflowError:
        return self._parent.fail(message, (*self._loc, *path))

    def slot(self, value: str | PatternSpec, *path: str | int) -> SlotAgent:
        return self._parent.slot(value, (*self._loc, *path))

    def optional(self, value: str | PatternSpec | None, *path: str | int) -> SlotAgent | None:
        return None if value is None else self.slot(value, *path)

    def plain_agent(self, value: str | PatternSpec, *path: str | int, why: str) -> Agent:
        agent = self.slot(value, *path)
        if not isinstance(agent, Agent):
            raise self.fail(f"this slot needs an agent name, not a pattern: {why}", *path)
        return agent

    def answer(self, value: AnswerSpec) -> AnswerFormat:
        try:
            return answer_format(value)
        except ValueError as exc:
            raise self.fail(str(exc), "answer") from None

    def template(self, name: str, *path: str | int) -> str:
        names = self.prompts.names()
        if name not in names:
            raise self.fail(
                f"no prompt template {name!r}.{suggest(name, names)} Templates: {names}.", *path
            )
        return name

    def tools(self, names: list[str], *path: str | int) -> ToolRegistry:
        registry = self._parent.tool_registry
        for i, name in enumerate(names):
            if name not in registry:
                raise self.fail(
                    f"no tool named {name!r}.{suggest(name, registry.names())} Tools: {registry.names()} "
                    "(search needs tools: {documents: FOLDER}; your own come from load_workflow(..., tools=...))",
                    *path,
                    i,
                )
        return registry.subset(names)
