"""Mixture-of-Agents (Wang et al., 2024) and Sparse MoA (Li et al., 2024);
``docs/methods.md#mixture-of-agents``.

MoA: ``layers - 1`` layers of proposers, then an aggregator. From the second layer
on, every call carries the previous layer's responses, numbered from 1, in the
aggregate-and-synthesize system prompt (appended to the caller's system message if
there is one, as in the reference). Each layer's calls run concurrently, so the wall
time is about one slowest call per layer plus the aggregator. A proposer whose call
fails is dropped from the references, as in the reference, but reported in
``details.dropped`` instead of silently.

Sparse MoA: after each layer a judge picks the ``k`` best responses (JSON
``{"chosen": [...], "end": bool}``) and may end the discussion early. An unusable
verdict keeps the first ``k`` (the reference picks at random) and is reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict, cast

from pydantic import Field

from concilium import GraphError, ModelError
from concilium._json import load_json
from concilium.agents import AgentReply, Message
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    AgentSlot,
    AnswerFormat,
    AnswerSpec,
    Builder,
    PatternOptions,
    PatternSpec,
    Respondent,
    Turn,
    ask,
    conversation,
    distinct_names,
    register_pattern,
    turn,
    with_system,
)
from concilium.prompts import PromptLibrary


class LayerRecord(TypedDict):
    """One proposer layer in ``details.layers``; Sparse MoA adds the judge's choice."""

    layer: int
    proposers: list[str]
    kept: NotRequired[list[str]]
    verdict: NotRequired[str]
    end: NotRequired[bool]


class Dropped(TypedDict):
    """A proposer whose call failed, in ``details.dropped``."""

    layer: int
    agent: str
    error: str


def mixture_of_agents(
    proposers: Sequence[Respondent] | Sequence[Sequence[Respondent]],
    aggregator: Respondent,
    *,
    layers: int = 3,
    judge: Respondent | None = None,
    k: int = 2,
    early_stop: bool = True,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    aggregate_prompt: str = "mixture/aggregate",
    select_prompt: str = "mixture/select",
    name: str = "mixture_of_agents",
) -> Graph:
    """Layers of proposers and a final aggregator.

    Args:
        proposers: the proposers of every layer, or one list per proposer layer.
        aggregator: writes the final answer from the last layer's responses.
        layers: proposer layers + 1 (the reference MoA has 3, MoA-Lite 2).
        judge: makes it Sparse MoA: keeps the ``k`` best responses per layer and
            may stop early (``early_stop``).
        answer: how to read the answer from the aggregator's reply (default: the text).

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(fn=lambda agent, i, msgs: f"{agent} says 4")
        >>> moa = mixture_of_agents(
        ...     [Agent("p1", fake.spec()), Agent("p2", fake.spec())],
        ...     Agent("agg", fake.spec()),
        ...     layers=2,
        ... )
        >>> run_sync(moa, "2 + 2?").calls
        3
    """
    if layers < 1:
        raise GraphError(
            f"mixture_of_agents needs layers >= 1 (the aggregator is the last), got {layers}"
        )
    per_layer = _layers(proposers, layers - 1)
    for i, layer in enumerate(per_layer):
        distinct_names(layer, f"mixture_of_agents layer {i + 1}")
    if judge is not None and k < 1:
        raise GraphError(f"sparse mixture_of_agents needs k >= 1, got {k}")
    opts = PatternOptions(answer, prompts, name)
    fmt, lib = opts.fmt, opts.lib

    def with_references(messages: Sequence[Message], refs: Sequence[str]) -> list[dict[str, Any]]:
        if not refs:
            return [dict(m) for m in messages]
        return with_system(messages, lib.render(aggregate_prompt, responses=list(refs)))

    async def propose(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        refs: list[str] = []
        entries: list[Turn] = []
        layer_log: list[LayerRecord] = []
        dropped: list[Dropped] = []
        asked = conversation(state, state["question"])  # the question as asked, no instruction
        for index, layer in enumerate(per_layer, start=1):
            ctx.emit({"type": "round_started", "round": index, "agents": [p.name for p in layer]})
            answered = await _answer_layer(ctx, layer, with_references(asked, refs), index, dropped)
            entries.extend(turn(ctx, reply, text=reply.text, answer=None, prompt=state["question"],
                                round=index, saw=len(refs)) for reply in answered.values())  # fmt: skip
            who, responses = list(answered), [reply.text for reply in answered.values()]
            record: LayerRecord = {"layer": index, "proposers": who}
            stop = False
            if judge is not None:
                keep, stop, verdict = await _select(
                    ctx, judge, lib, select_prompt, state, responses, k, index
                )
                record["kept"] = [who[i] for i in keep]
                record["verdict"], record["end"] = verdict, stop
                responses = [responses[i] for i in keep]
            layer_log.append(record)
            refs = responses
            if stop and early_stop:
                break
        return {"transcript": entries, "references": refs,
                "details": {"layers": layer_log, "dropped": dropped}}  # fmt: skip

    async def aggregate(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        refs: list[str] = state.get("references") or []
        reply = await ask(
            ctx, aggregator, with_references(conversation(state, state["question"]), refs), "final"
        )
        value = fmt.extract(reply.text)
        entry = turn(ctx, reply, text=reply.text, answer=value, prompt=state["question"],
                     round=len(state["details"]["layers"]) + 1, saw=len(refs))  # fmt: skip
        return {"answer": value, "text": reply.text, "transcript": [entry],
                "details": {"aggregator": aggregator.name, "references": len(refs)}}  # fmt: skip

    graph = Graph(opts.name, state={"references": None})
    graph.add_node("propose", propose, writes=["transcript", "references", "details"])
    graph.add_node("aggregate", aggregate, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "propose")
    graph.add_edge("propose", "aggregate")
    graph.add_edge("aggregate", END)
    return graph


def _layers(
    proposers: Sequence[Respondent] | Sequence[Sequence[Respondent]], count: int
) -> list[list[Respondent]]:
    if not proposers:
        raise GraphError("mixture_of_agents needs at least one proposer")
    if isinstance(proposers[0], (list, tuple)):
        if len(proposers) != count:
            raise GraphError(
                f"{len(proposers)} proposer layers given for layers={count + 1}; give {count}"
            )
        return [list(layer) for layer in cast("Sequence[Sequence[Respondent]]", proposers)]
    return [list(cast("Sequence[Respondent]", proposers)) for _ in range(count)]


async def _answer_layer(
    ctx: RunContext,
    layer: Sequence[Respondent],
    messages: list[dict[str, Any]],
    index: int,
    dropped: list[Dropped],
) -> dict[str, AgentReply]:
    """The layer's replies by proposer, asked concurrently. A proposer whose call
    fails (``ModelError``) is dropped and reported, as in the reference; any other
    error cancels the layer's other calls and is raised."""

    async def reply_or_error(proposer: Respondent) -> AgentReply | ModelError:
        try:
            return await ask(ctx, proposer, messages, f"L{index}")
        except ModelError as failed:
            return failed

    answered: dict[str, AgentReply] = {}
    for proposer, reply in zip(layer, await ctx.map(reply_or_error, layer), strict=True):
        if isinstance(reply, ModelError):
            dropped.append({"layer": index, "agent": proposer.name, "error": str(reply)})
        else:
            answered[proposer.name] = reply
    if not answered:
        raise ModelError(f"every proposer of layer {index} failed: {dropped[-len(layer) :]}")
    return answered


_JSON = re.compile(r"\{.*\}", re.S)


def parse_selection(text: str, count: int, k: int) -> tuple[list[int], bool] | None:
    """A judge's ``{"chosen": [...], "end": bool}`` -> (indices, end), or ``None``
    when it names no valid index.

    Example:
        >>> parse_selection('{"chosen": [2, 0, 2, 9], "end": true}', count=3, k=2)
        ([2, 0], True)
    """
    match = _JSON.search(text)
    if not match:
        return None
    try:
        data: object = load_json(match.group(0))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    verdict = cast("dict[str, object]", data)  # JSON object keys are strings
    chosen = verdict.get("chosen")
    if not isinstance(chosen, list):
        return None
    keep: list[int] = []
    for i in cast("list[object]", chosen):
        if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count and i not in keep:
            keep.append(i)
    return (keep[:k], bool(verdict.get("end", False))) if keep else None


async def _select(
    ctx: RunContext, judge: Respondent, lib: PromptLibrary, template: str,
    state: Mapping[str, Any], responses: list[str], k: int, layer: int,
) -> tuple[list[int], bool, str]:  # fmt: skip
    if len(responses) <= k:
        return list(range(len(responses))), False, "kept all (no more than k)"
    text = lib.render(template, question=state["question"], responses=responses, k=k)
    prompt = conversation(state, text)
    reply = await ask(ctx, judge, prompt, f"L{layer}/select")
    parsed = parse_selection(reply.text, len(responses), k)
    if parsed is None:
        return list(range(k)), False, f"unusable verdict, kept the first {k}: {reply.text[:200]!r}"
    keep, end = parsed
    return keep, end, reply.text


# -- workflow files -------------------------------------------------------------


class MixtureOfAgentsSpec(PatternSpec):
    """Layers of proposers, then an aggregator; a judge makes it Sparse MoA."""

    kind: Literal["mixture_of_agents"]
    proposers: list[AgentSlot] | list[list[AgentSlot]] = Field(min_length=1)
    aggregator: AgentSlot
    layers: int = Field(default=3, ge=1, le=20)
    judge: AgentSlot | None = None
    k: int = Field(default=2, ge=1)
    early_stop: bool = True
    answer: AnswerSpec = "text"


@register_pattern(MixtureOfAgentsSpec)
def _build(spec: MixtureOfAgentsSpec, b: Builder) -> Graph:
    flat: list[Any] = []
    layered: list[list[Any]] = []  # proposers per layer (validation keeps the shapes apart)
    for i, item in enumerate(spec.proposers):
        if isinstance(item, list):
            layered.append([b.slot(a, "proposers", i, j) for j, a in enumerate(item)])
        else:
            flat.append(b.slot(item, "proposers", i))
    proposers = layered or flat
    return mixture_of_agents(
        proposers, b.slot(spec.aggregator, "aggregator"), layers=spec.layers,
        judge=b.optional(spec.judge, "judge"), k=spec.k, early_stop=spec.early_stop,
        answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
