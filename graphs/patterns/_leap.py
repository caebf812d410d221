"""LeaP, Learning from Peers (Luo et al. 2025; ``docs/methods.md#leap``): N reasoning
paths generate in parallel; every ``tokens`` tokens each path writes a short summary,
the summaries are routed to peers and inserted into each path's context, and
generation continues. The final answers are majority-voted.

Over a chat API (ours; the reference continues raw text through completions): a
segment is one streamed request cut at ``max_tokens=tokens``; the path's context is
then its conversation plus that segment as an assistant message, the summary request
appends a user "summarize" turn (``max_tokens=summary_tokens``), and the next segment
appends the peers' comments ("Peer 1: ...", anonymous, as in the reference) as a user
turn. Each exchange is one barrier: every active path's summary must exist before
routing. A path whose segment ended by itself (``finish_reason`` not ``"length"``)
has finished and leaves the pool, so later exchanges see fewer peers; paths still
running after ``exchanges`` exchanges are asked for their final answer. Answers are
extracted from the path's own text only (never from the peers it quotes).

Routing scores peers by token overlap (Jaccard of lower-cased word sets) instead of
the reference's Levenshtein ratio (both lexical): ``"all"`` (``peer_top_k
= -1``), ``"dispersed"`` (the ``k`` least similar), ``"clustered"`` (the ``k`` most
similar); ties go to the lower path index.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Literal, cast

from pydantic import Field

from concilium.agents import Agent, AgentReply
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
    register_pattern,
    report_vote,
    solve_messages,
    turn,
    user,
)
from concilium.prompts import PromptLibrary

Routing = Literal["all", "dispersed", "clustered"]


def overlap(a: str, b: str) -> float:
    """Jaccard similarity of the lower-cased word sets of ``a`` and ``b``.

    Example:
        >>> overlap("x is 7", "X is 8")
        0.5
    """
    left, right = set(a.lower().split()), set(b.lower().split())
    return len(left & right) / len(left | right) if left | right else 1.0


def route(summaries: Mapping[int, str], routing: Routing, k: int) -> dict[int, list[int]]:
    """Which peers each path reads: all others, or the ``k`` least (``dispersed``) or
    most (``clustered``) similar by ``overlap``; ties to the lower index.

    Example:
        >>> route({0: "a b", 1: "a b", 2: "c d"}, "dispersed", 1)
        {0: [2], 1: [2], 2: [0]}
    """
    peers: dict[int, list[int]] = {}
    for i, own in summaries.items():
        others = [j for j in summaries if j != i]
        if routing == "all" or k < 0 or k >= len(others):
            peers[i] = others
            continue
        sign = 1 if routing == "dispersed" else -1
        ranked = sorted(others, key=lambda j: (sign * overlap(own, summaries[j]), j))
        peers[i] = sorted(ranked[:k])
    return peers


def leap(
    agent: Respondent,
    *,
    paths: int = 4,
    tokens: int = 2048,
    summary_tokens: int = 256,
    exchanges: int = 4,
    routing: Routing = "dispersed",
    peer_top_k: int = 2,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompt: str = "leap/solve",
    prompts: PromptLibrary | None = None,
    name: str = "leap",
) -> Graph:
    """N streamed paths that exchange summaries every ``tokens`` tokens, then a vote.

    Args:
        paths: N, the reasoning paths.
        tokens: T, the tokens each path generates between exchanges.
        summary_tokens: the summary's token budget (its word bound in the prompt too).
        exchanges: how many times the paths exchange summaries (segments = exchanges + 1).
        routing: ``"all"``, ``"dispersed"`` or ``"clustered"``; ``peer_top_k`` = k
            (-1: all peers).

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel({"a": ["\\\\boxed{7}"]})
        >>> result = run_sync(leap(Agent("a", fake.spec()), paths=3, exchanges=1), "?")
        >>> result.answer, result.details["finished_at"]
        ('7', [1, 1, 1])
    """
    if paths < 1 or tokens < 1 or summary_tokens < 1 or exchanges < 0:
        raise ValueError(
            f"leap needs paths, tokens, summary_tokens >= 1 and exchanges >= 0, "
            f"got {paths}, {tokens}, {summary_tokens}, {exchanges}"
        )
    if routing not in ("all", "dispersed", "clustered"):
        raise ValueError(f"routing must be 'all', 'dispersed' or 'clustered', got {routing!r}")
    opts = PatternOptions(answer, prompts, name)
    streams = isinstance(agent, Agent)

    async def generate(
        ctx: RunContext, messages: list[dict[str, Any]], tag: str, max_tokens: int
    ) -> tuple[str, bool, AgentReply]:
        """One streamed segment: its text, whether it ended by itself, the reply."""
        deltas: list[str] = []
        stream: dict[str, Any] = {"on_text": deltas.append} if streams else {}
        reply = await ask(ctx, agent, messages, tag, max_tokens=max_tokens, **stream)
        text = "".join(deltas) or reply.text
        return text, (reply.finish_reasons or (None,))[0] != "length", reply

    async def run(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        first = solve_messages(state, opts.lib, prompt, opts.fmt)
        contexts = {i: [dict(m) for m in first] for i in range(paths)}
        own = {i: "" for i in range(paths)}  # each path's own generated text
        finished_at: dict[int, int] = {}
        transcript: list[Turn] = []
        log: list[dict[str, Any]] = []
        comments: dict[int, str] = {}

        async def segment(i: int, seg: int) -> None:
            if seg > 0:
                contexts[i] += user(comments[i])
            text, done, reply = await generate(ctx, contexts[i], f"p{i}s{seg}", tokens)
            contexts[i].append({"role": "assistant", "content": text})
            own[i] += ("\n\n" if own[i] else "") + text
            prompt_text = str(contexts[i][-2]["content"])
            transcript.append(turn(ctx, reply, text=text, answer=opts.fmt.extract(text),
                                   prompt=prompt_text, sample=i, round=seg + 1, step="segment"))  # fmt: skip
            if done:
                finished_at[i] = seg + 1

        async def summarize(i: int, seg: int) -> str:
            ask_text = opts.lib.render("leap/summarize", words=summary_tokens)
            text, _, reply = await generate(
                ctx, [*contexts[i], *user(ask_text)], f"p{i}m{seg}", summary_tokens
            )
            transcript.append(turn(ctx, reply, text=text, answer=None, prompt=ask_text,
                                   sample=i, round=seg + 1, step="summary"))  # fmt: skip
            return " ".join(text.split())

        await ctx.map(partial(segment, seg=0), range(paths))
        for seg in range(1, exchanges + 1):
            active = [i for i in range(paths) if i not in finished_at]
            if not active:
                break
            texts = await ctx.map(partial(summarize, seg=seg), active)
            summaries = dict(zip(active, texts, strict=True))
            peers = route(summaries, routing, peer_top_k)
            for i in active:
                quoted = [f'Peer {n}: "{summaries[j]}"' for n, j in enumerate(peers[i], 1)]
                comments[i] = opts.lib.render(
                    "leap/peers", comments="\n".join(quoted) or "No comments"
                )
            log.append({"exchange": seg, "summaries": {str(i): s for i, s in summaries.items()},
                        "peers": {str(i): p for i, p in peers.items()}})  # fmt: skip
            await ctx.map(partial(segment, seg=seg), active)

        async def conclude(i: int) -> None:
            ask_text = opts.lib.render("leap/answer", answer_format=opts.fmt.instruction)
            text, _, reply = await generate(
                ctx, [*contexts[i], *user(ask_text)], f"p{i}final", summary_tokens
            )
            own[i] += "\n\n" + text
            transcript.append(turn(ctx, reply, text=text, answer=opts.fmt.extract(text),
                                   prompt=ask_text, sample=i, step="answer"))  # fmt: skip

        unfinished = [i for i in range(paths) if i not in finished_at]
        await ctx.map(conclude, unfinished)
        # Each path's answer from its own text only (never from the peers it quoted).
        finals = [cast(Turn, {"text": own[i], "answer": opts.fmt.extract(own[i])})
                  for i in range(paths)]  # fmt: skip
        _, update = report_vote(ctx, finals)
        return {**update, "transcript": transcript,
                "details": {"paths": paths, "exchanges": log,
                            "finished_at": [finished_at.get(i, 0) for i in range(paths)],
                            "answers": [e["answer"] for e in finals]}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("paths", run, writes=["answer", "text", "votes", "transcript", "details"])
    graph.add_edge(START, "paths")
    graph.add_edge("paths", END)
    return graph


# -- workflow files -------------------------------------------------------------


class LeapSpec(PatternSpec):
    """N streamed paths exchanging summaries every T tokens, then a vote."""

    kind: Literal["leap"]
    agent: AgentSlot
    paths: int = Field(default=4, ge=1, le=256)
    tokens: int = Field(default=2048, ge=1)
    summary_tokens: int = Field(default=256, ge=1)
    exchanges: int = Field(default=4, ge=0, le=64)
    routing: Routing = "dispersed"
    peer_top_k: int = Field(default=2, ge=-1)
    answer: AnswerSpec = "boxed"
    prompt: str = "leap/solve"


@register_pattern(LeapSpec)
def _build(spec: LeapSpec, b: Builder) -> Graph:
    return leap(
        b.slot(spec.agent, "agent"), paths=spec.paths, tokens=spec.tokens,
        summary_tokens=spec.summary_tokens, exchanges=spec.exchanges, routing=spec.routing,
        peer_top_k=spec.peer_top_k, answer=b.answer(spec.answer),
        prompt=b.template(spec.prompt, "prompt"), prompts=b.prompts, name=b.name,
    )  # fmt: skip
