"""DeepConf online (Fu et al., 2025; ``docs/methods.md#deepconf-online``): cut weak
traces while they are still generating, and stop sampling at consensus.

1. Warm-up: ``warmup`` full traces drawn in parallel with top-k logprobs; the stopping
   threshold is a percentile of their lowest-group confidences: ``keep: top10``
   (DeepConf-low, aggressive) puts it at the 90th percentile, ``keep: top90``
   (DeepConf-high, conservative) at the 10th.
2. Online: further traces are streamed token by token, at most ``parallel`` in
   flight; each one's group confidence over the last ``window`` tokens is updated as
   its tokens arrive (``WindowConfidence``) and the trace is aborted the moment a
   whole window falls below the threshold (its stream is closed, so the server stops
   generating it).
3. After each trace, the confidence-weighted consensus ``beta`` (the leading
   answer's share of the vote weight) is checked; at ``consensus`` (tau) no new trace
   is started and those in flight are aborted; otherwise until ``budget`` traces.
4. The answer: the vote of the finished traces whose lowest-group confidence reaches
   the threshold (the warm-up's most confident ones, and every streamed one never
   cut), each weighted by it; ``beta`` is over the same traces, so a question whose
   confident warm-up traces agree stops there.

Each trace is its own request (never ``n``): only a request of its own can be
aborted alone. Aborted traces stay in the transcript with their text, tokens,
confidence curve and why they stopped, and their tokens count in the usage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from concilium._errors import GraphError
from concilium.agents import Agent, AgentReply, TokenLogprob
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    DEEPCONF_TOP_K,
    DEEPCONF_WINDOW,
    AnswerFormat,
    AnswerSpec,
    Builder,
    PatternOptions,
    PatternSpec,
    Turn,
    WindowConfidence,
    ask,
    deepconf_threshold,
    majority_vote,
    register_pattern,
    solve_messages,
    turn,
)
from concilium.prompts import PromptLibrary

from ._confidence import WeightedVote, weighted_vote

# The paper's two settings of eta, by what they keep (its reference code names them by
# the percentile instead, CONFIDENCE_PERCENTILE = 90 for the top 10%: easy to invert).
KEEP_PERCENT = {"top10": 10.0, "top90": 90.0}
Keep = Literal["top10", "top90"]


def deepconf_online(
    agent: Agent,
    *,
    warmup: int = 16,
    budget: int = 512,
    keep: str = "top10",
    consensus: float = 0.95,
    parallel: int = 16,
    window: int = DEEPCONF_WINDOW,
    top_logprobs: int = DEEPCONF_TOP_K,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "deepconf_online",
) -> Graph:
    """DeepConf online: warm up, then stream traces, abort the unconfident ones, stop at consensus.

    Args:
        warmup: full traces that set the threshold (the paper: 16).
        budget: the most traces in all, warm-up included (the paper: 512).
        keep: ``"top10"`` (threshold at the 90th percentile of the warm-up's
            lowest-group confidences: DeepConf-low) or ``"top90"`` (the 10th: DeepConf-high).
        consensus: tau, the confidence-weighted share of the leading answer that stops sampling.
        parallel: online traces in flight at once.
        window: tokens in a confidence group (the paper: 2048).

    Example:
        >>> from concilium.agents import FakeModel
        >>> try:
        ...     deepconf_online(Agent("s", FakeModel().spec()), keep="top50")
        ... except GraphError as exc:
        ...     print(exc)
        deepconf_online keep 'top50' is not 'top10' (DeepConf-low: threshold at the 90th percentile) or 'top90' (DeepConf-high: the 10th percentile)
    """
    _check(agent, keep=keep, warmup=warmup, budget=budget, parallel=parallel, consensus=consensus)
    sampler = agent.with_options(logprobs=True, top_logprobs=top_logprobs)
    opts = PatternOptions(answer, prompts, name)

    async def sample(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        messages = solve_messages(state, opts.lib, prompt, opts.fmt)
        question = state["question"]

        def seeded(i: int) -> dict[str, Any]:
            return {} if agent.seed is None else {"seed": agent.seed + i}

        async def warm(i: int) -> Turn:
            reply = await ask(ctx, sampler, messages, f"w{i}", **seeded(i))
            tracker = WindowConfidence(window)
            for token in _tokens(reply, i):
                tracker.add(token.top)
            return _trace(ctx, reply, question, opts.fmt, i, "warmup", tracker, "complete")

        warm_entries = await ctx.map(warm, range(warmup))
        vote = _Vote(
            deepconf_threshold([_conf(e) for e in warm_entries], KEEP_PERCENT[keep]), consensus
        )
        vote.arrived(warm_entries)

        async def online(i: int) -> Turn:
            tracker = WindowConfidence(window)
            why = ["complete"]

            def on_token(token: TokenLogprob) -> bool:
                if not token.top:
                    raise GraphError(_NO_TOP.format(i=i))
                tracker.add(token.top)
                if vote.settled:
                    why[0] = "consensus"
                elif tracker.full and tracker.group < vote.threshold:
                    why[0] = "below_threshold"
                return why[0] != "complete"

            reply = await ask(ctx, sampler, messages, f"s{i}", on_token=on_token, **seeded(i))
            if not tracker.tokens and reply.text:  # text came, its tokens never did
                raise GraphError(_NO_TOP.format(i=i))
            if why[0] == "complete" and tracker.lowest < vote.threshold:
                why[0] = "below_threshold"  # shorter than a window: checked at its end
            return _trace(ctx, reply, question, opts.fmt, i, "online", tracker, why[0])

        # the stop never says stop: once settled, no trace starts and those in flight
        # abort at their next token, so each is counted (map_until would cancel them)
        launches = (i for i in range(warmup, budget) if not vote.settled)
        await ctx.map_until(
            online, launches, stop=lambda got: vote.arrived(got[-1:]), parallel=parallel
        )
        return vote.result(ctx, keep=keep, warmup=warmup, budget=budget, window=window)

    graph = Graph(opts.name)
    graph.add_node("sample", sample, writes=["answer", "text", "transcript", "votes", "details"])
    graph.add_edge(START, "sample")
    graph.add_edge("sample", END)
    return graph


def _check(
    agent: Agent, *, keep: str, warmup: int, budget: int, parallel: int, consensus: float
) -> None:
    """Refuse what deepconf_online cannot honour, saying why."""
    if not isinstance(agent, Agent):
        raise GraphError(
            "deepconf_online needs an Agent (it streams its token logprobs), not a nested pattern"
        )
    if keep not in KEEP_PERCENT:
        raise GraphError(
            f"deepconf_online keep {keep!r} is not 'top10' (DeepConf-low: threshold at the "
            "90th percentile) or 'top90' (DeepConf-high: the 10th percentile)"
        )
    if warmup < 1 or budget < warmup or parallel < 1:
        raise GraphError(
            f"deepconf_online needs warmup >= 1, budget >= warmup and parallel >= 1, "
            f"got warmup={warmup}, budget={budget}, parallel={parallel}"
        )
    if not 0 < consensus <= 1:
        raise GraphError(f"deepconf_online consensus must be in (0, 1], got {consensus}")


_NO_TOP = (
    "trace {i} came back without top logprobs; deepconf_online needs a server that "
    "returns them while it streams (capabilities: {{logprobs: true}})"
)


def _conf(entry: Turn) -> float:
    return entry.get("confidence", 0.0)


class _Vote:
    """The traces so far, which of them vote, and whether the consensus is reached."""

    def __init__(self, threshold: float, consensus: float):
        self.threshold = threshold
        self.consensus = consensus
        self.entries: list[Turn] = []
        self.settled = False

    def votes(self, entry: Turn) -> bool:
        """A finished trace votes when its lowest group reaches the threshold: the
        warm-up's most confident ones, and every streamed one never cut."""
        return entry.get("stopped") == "complete" and _conf(entry) >= self.threshold

    def tally(self) -> WeightedVote:
        voters = [e for e in self.entries if self.votes(e)]
        return weighted_vote([e["answer"] for e in voters], [_conf(e) for e in voters])

    def arrived(self, entries: Sequence[Turn]) -> bool:
        self.entries.extend(entries)
        self.settled = self.settled or self.tally().agreement >= self.consensus
        return False

    def result(self, ctx: RunContext, **settings: Any) -> dict[str, Any]:
        entries = self.entries
        for entry in entries:
            entry["kept"] = self.votes(entry)
        tally = self.tally()
        counts = {a: round(w, 6) for a, w in tally.weights.items()}
        ctx.emit({"type": "vote", "counts": counts, "winner": tally.winner})
        kept = [e for e in entries if e.get("kept")]
        carrier = next((e["text"] for e in kept if e["answer"] == tally.winner), None)
        stopped = [e.get("stopped") for e in entries]
        return {"answer": tally.winner, "text": carrier, "transcript": entries, "votes": tally.as_dict(),
                "details": {**settings, "threshold": self.threshold, "consensus": self.consensus,
                            "agreement": round(tally.agreement, 4), "traces": len(entries),
                            "voters": len(kept), "stopped_by": "consensus" if self.settled else "budget",
                            "aborted": {why: stopped.count(why) for why in ("below_threshold", "consensus")},
                            "generated_tokens": sum(e["completion_tokens"] for e in entries),
                            "unweighted": majority_vote([e["answer"] for e in kept]).as_dict()}}  # fmt: skip


def _tokens(reply: AgentReply, i: int) -> tuple[TokenLogprob, ...]:
    """A whole trace's tokens, each with its top-k (else a ``GraphError`` saying so)."""
    tokens = reply.logprobs or ()
    if not tokens or not all(t.top for t in tokens):
        raise GraphError(_NO_TOP.format(i=i))
    return tokens


def _trace(
    ctx: RunContext, reply: AgentReply, question: str, fmt: AnswerFormat, i: int,
    phase: str, tracker: WindowConfidence, stopped: str,
) -> Turn:  # fmt: skip
    """One trace as a transcript entry: an aborted one has no answer (it never finished)."""
    done = stopped == "complete"
    entry = turn(ctx, reply, text=reply.text, answer=fmt.extract(reply.text) if done else None,
                 prompt=question, sample=i, request=i, step=phase)  # fmt: skip
    entry["sample_tokens"] = tracker.tokens
    entry["confidence"] = tracker.lowest
    entry["stopped"] = stopped
    entry["curve"] = [round(c, 4) for c in tracker.curve]
    return entry


# -- workflow files -------------------------------------------------------------


class DeepConfOnlineSpec(PatternSpec):
    """DeepConf online: streamed traces aborted below a warm-up threshold, sampling stopped at consensus."""

    kind: Literal["deepconf_online"]
    agent: str = Field(description="an agent name (its streamed logprobs are read)")
    warmup: int = Field(default=16, ge=1, le=4096)
    budget: int = Field(default=512, ge=1, le=4096)
    keep: Keep = Field(
        default="top10",
        description="top10: threshold at the 90th percentile of the warm-up (DeepConf-low, "
        "aggressive); top90: at the 10th (DeepConf-high, conservative)",
    )
    consensus: float = Field(default=0.95, gt=0, le=1)
    parallel: int = Field(default=16, ge=1, le=256)
    window: int = Field(default=2048, ge=1)
    top_logprobs: int = Field(default=20, ge=1, le=20)
    answer: AnswerSpec = "boxed"
    prompt: str = Field(
        default="self_consistency/solve",
        description="template wrapping a bare question (completion/question: the question alone)",
    )


@register_pattern(DeepConfOnlineSpec)
def _build(spec: DeepConfOnlineSpec, b: Builder) -> Graph:
    if spec.budget < spec.warmup:
        raise b.fail(
            f"budget {spec.budget} is below warmup {spec.warmup}: the budget counts the "
            "warm-up traces too; raise budget or lower warmup",
            "budget",
        )
    agent = b.plain_agent(spec.agent, "agent", why="its streamed token logprobs are read")
    return deepconf_online(
        agent, warmup=spec.warmup, budget=spec.budget, keep=spec.keep, consensus=spec.consensus,
        parallel=spec.parallel, window=spec.window, top_logprobs=spec.top_logprobs,
        answer=b.answer(spec.answer), prompts=b.prompts, prompt=b.template(spec.prompt, "prompt"),
        name=b.name,
    )  # fmt: skip
