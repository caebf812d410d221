"""Choosing one of N candidates with a judge (``docs/methods.md#choosing-and-synthesizing``).

* ``best_of_n``: every candidate is judged on its own, concurrently. ``judge="score"``
  reads "Score: N" (1-10) from the judge's reply; ``judge="verifier"`` asks Yes/No
  with one token and, when the server returns logprobs, scores by the probability
  of "Yes" (normalised against "No"). ``weighted=True`` sums the scores per
  distinct answer instead of taking the best single candidate.
* ``knockout``: a pairwise judge in a single-elimination bracket: candidates are
  shuffled with a seed, an odd one out gets a bye, each round's matches run
  concurrently, N-1 judge calls in all. A verdict with no "Winner: 1|2" goes to
  the first of the pair and is marked as a tie-break in the bracket.
* ``universal_self_consistency``: one call shows all N responses (numbered from 0)
  and asks for the most consistent one; a reply without a valid index is an
  ``OutputParseError`` quoting it, never a guess.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from pydantic import Field

from concilium import GraphError, OutputParseError
from concilium.agents import AgentReply
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
    majority_vote,
    register_pattern,
    sample_turns,
    solve_messages,
)
from concilium.prompts import PromptLibrary

_SCORE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.I)
_WINNER = re.compile(r"winner\s*[:=]?\s*(?:solution\s*)?([12])\b", re.I)
_USC = re.compile(r"most consistent response is response\s*(\d+)", re.I)


def parse_score(text: str) -> float | None:
    """The last "Score: N" in a judge's reply, or ``None``.

    Example:
        >>> parse_score("Looks right. Score: 8"), parse_score("no verdict")
        (8.0, None)
    """
    found = _SCORE.findall(text)
    return float(found[-1]) if found else None


def yes_probability(reply: AgentReply) -> float:
    """P(Yes) from the first token's top logprobs, normalised against No; without
    logprobs, 1.0 if the reply starts with "yes" and 0.0 otherwise."""
    logprobs = reply.logprobs
    if logprobs:
        mass = {"yes": 0.0, "no": 0.0}
        for token, lp in logprobs[0].top or ((logprobs[0].token, logprobs[0].logprob),):
            word = token.strip().lower()
            if word in mass:
                mass[word] += math.exp(lp)
        total = mass["yes"] + mass["no"]
        if total > 0:
            return mass["yes"] / total
    return 1.0 if reply.text.strip().lower().startswith("yes") else 0.0


def parse_winner(text: str) -> int | None:
    """1 or 2 from the last "Winner: N", else ``None``.

    Example:
        >>> parse_winner("Solution 2 slips. Winner: 1"), parse_winner("both fine")
        (1, None)
    """
    found = _WINNER.findall(text)
    return int(found[-1]) if found else None


def parse_consistent_index(text: str, count: int, agent: str = "selector") -> int:
    """The index in "The most consistent response is Response X" (0-based).

    Raises:
        OutputParseError: no such sentence, or X is not one of the responses.
    """
    match = _USC.search(text)
    if match is None or not 0 <= int(match.group(1)) < count:
        raise OutputParseError(
            f"the reply does not name a response 0..{count - 1} as 'The most consistent response "
            "is Response X'; use a selector model that follows that instruction",
            agent=agent,
            text=text,
        )
    return int(match.group(1))


Node = Callable[[Mapping[str, Any], RunContext], Awaitable[dict[str, Any]]]


class Judged(TypedDict):
    """One candidate in best_of_n's ``details.candidates``."""

    sample: int
    answer: str | None
    score: float
    judged: str


class Match(TypedDict):
    """One knockout match: the two samples, the one that goes on, and whether the
    verdict named no winner (then the first of the pair goes on)."""

    pair: list[int]
    winner: int
    tie_break: bool


class BracketRound(TypedDict):
    """One round of knockout's ``details.bracket``."""

    round: int
    bye: int | None
    matches: list[Match]


def _generate(generator: Respondent, opts: PatternOptions, prompt: str, n: int) -> Node:
    """The first step of all three: N candidates in one request, one ``Turn`` each."""

    async def generate(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        reply = await ask(
            ctx, generator, solve_messages(state, opts.lib, prompt, opts.fmt), "generate", n=n
        )
        return {"transcript": sample_turns(ctx, reply, opts.fmt, state["question"])}

    return generate


def _sample(entry: Turn) -> int:
    """A candidate's sample index (``sample_turns`` gives every candidate one)."""
    if "sample" not in entry:
        raise GraphError(
            f"transcript entry of {entry['agent']!r} at {entry['path']!r} is not a candidate (no sample)"
        )
    return entry["sample"]


def _in_sample_order(state: Mapping[str, Any]) -> list[Turn]:
    return sorted(state["transcript"], key=_sample)


def _best(
    entries: Sequence[Turn], scores: Sequence[float], weighted: bool
) -> tuple[str | None, Turn]:
    """The winning answer and the candidate that carries it: the best-scored one
    (first of equals), or with ``weighted`` the answer with the highest summed score."""
    if not weighted:
        best = entries[max(range(len(entries)), key=lambda i: scores[i])]
        return best["answer"], best
    totals: dict[str, float] = {}
    for entry, score in zip(entries, scores, strict=True):
        if entry["answer"] is not None:
            totals[entry["answer"]] = totals.get(entry["answer"], 0.0) + score
    winner = max(totals, key=totals.__getitem__) if totals else None
    return winner, next((e for e in entries if e["answer"] == winner), entries[0])


def _check(n: int, what: str) -> None:
    if n < 1:
        raise GraphError(f"{what} needs n >= 1, got {n}")


def best_of_n(
    generator: Respondent,
    judge: Respondent,
    *,
    n: int = 4,
    mode: str = "score",
    weighted: bool = False,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "best_of_n",
) -> Graph:
    """N candidates, each judged on its own; the best one (or best answer) wins.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(
        ...     {"gen": ["\\\\boxed{1}", "\\\\boxed{2}"], "judge": ["Score: 3", "Score: 9"]}
        ... )
        >>> run_sync(
        ...     best_of_n(Agent("gen", fake.spec()), Agent("judge", fake.spec()), n=2), "?"
        ... ).answer
        '2'
    """
    _check(n, "best_of_n")
    if mode not in ("score", "verifier"):
        raise GraphError(f"best_of_n mode {mode!r} is not one of 'score', 'verifier'")
    opts = PatternOptions(answer, prompts, name)
    lib = opts.lib

    async def judge_one(
        ctx: RunContext, state: Mapping[str, Any], entry: Turn
    ) -> tuple[float | None, str]:
        question = state["question"]
        if mode == "verifier":
            text = lib.render("best_of_n/verify", question=question, candidate=entry["text"])
            tag = f"verify{_sample(entry)}"
            asked = conversation(state, text)
            reply = await ask(ctx, judge, asked, tag, max_tokens=1, logprobs=True, top_logprobs=5)
            return yes_probability(reply), reply.text
        text = lib.render("best_of_n/score", question=question, candidate=entry["text"])
        reply = await ask(ctx, judge, conversation(state, text), f"score{_sample(entry)}")
        return parse_score(reply.text), reply.text

    async def select(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        entries = _in_sample_order(state)
        verdicts = await ctx.map(lambda entry: judge_one(ctx, state, entry), entries)
        scores = [s if s is not None else 0.0 for s, _ in verdicts]
        table: list[Judged] = [{"sample": _sample(e), "answer": e["answer"], "score": s, "judged": v[:200]}
                               for e, s, (_, v) in zip(entries, scores, verdicts, strict=True)]  # fmt: skip
        winner, best = _best(entries, scores, weighted)
        return {"answer": winner, "text": best["text"],
                "votes": majority_vote([e["answer"] for e in entries]).as_dict(),
                "details": {"mode": mode, "weighted": weighted, "candidates": table, "chosen": _sample(best)}}  # fmt: skip

    return _two_step(opts.name, _generate(generator, opts, prompt, n), select)


def knockout(
    generator: Respondent,
    judge: Respondent,
    *,
    n: int = 8,
    seed: int = 0,
    answer: str | Mapping[str, str] | AnswerFormat = "boxed",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "knockout",
) -> Graph:
    """A single-elimination tournament of N candidates under a pairwise judge.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(
        ...     {"gen": ["\\\\boxed{1}", "\\\\boxed{2}", "\\\\boxed{3}"], "judge": ["Winner: 2"]}
        ... )
        >>> result = run_sync(
        ...     knockout(Agent("gen", fake.spec()), Agent("judge", fake.spec()), n=3), "?"
        ... )
        >>> result.calls, len(result.details["bracket"])
        (3, 2)
    """
    _check(n, "knockout")
    opts = PatternOptions(answer, prompts, name)
    lib = opts.lib

    async def match(ctx: RunContext, state: Mapping[str, Any], r: int, a: Turn, b: Turn) -> Match:
        text = lib.render(
            "best_of_n/pair", question=state["question"], first=a["text"], second=b["text"]
        )
        reply = await ask(ctx, judge, conversation(state, text), f"r{r}/{_sample(a)}v{_sample(b)}")
        verdict = parse_winner(reply.text)
        return {"pair": [_sample(a), _sample(b)], "winner": _sample(b if verdict == 2 else a),
                "tie_break": verdict is None}  # fmt: skip

    async def play_round(
        ctx: RunContext, state: Mapping[str, Any], r: int, alive: list[Turn]
    ) -> BracketRound:
        """One round's matches, concurrently; the odd one out (the last) has a bye."""
        ctx.emit({"type": "round_started", "round": r, "agents": [judge.name]})
        bye, paired = (alive[-1], alive[:-1]) if len(alive) % 2 else (None, alive)
        pairs = [(paired[i], paired[i + 1]) for i in range(0, len(paired), 2)]
        matches = await ctx.map(lambda pair: match(ctx, state, r, *pair), pairs)
        return {"round": r, "bye": None if bye is None else _sample(bye), "matches": matches}

    async def tournament(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        by_sample = {_sample(e): e for e in state["transcript"]}
        order = sorted(by_sample)
        random.Random(seed).shuffle(order)
        alive = [by_sample[s] for s in order]
        bracket: list[BracketRound] = []
        while len(alive) > 1:
            played = await play_round(ctx, state, len(bracket) + 1, alive)
            bracket.append(played)
            ahead = [] if played["bye"] is None else [played["bye"]]
            alive = [by_sample[s] for s in ahead + [m["winner"] for m in played["matches"]]]
        champion = alive[0]
        return {"answer": champion["answer"], "text": champion["text"],
                "votes": majority_vote([e["answer"] for e in by_sample.values()]).as_dict(),
                "details": {"bracket": bracket, "champion": _sample(champion), "seed": seed}}  # fmt: skip

    return _two_step(opts.name, _generate(generator, opts, prompt, n), tournament)


def universal_self_consistency(
    generator: Respondent,
    selector: Respondent,
    *,
    n: int = 8,
    answer: str | Mapping[str, str] | AnswerFormat = "text",
    prompts: PromptLibrary | None = None,
    prompt: str = "self_consistency/solve",
    name: str = "universal_self_consistency",
) -> Graph:
    """N responses; the selector names the most consistent one (no answer extraction needed).

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> fake = FakeModel(
        ...     {
        ...         "gen": ["red", "blue", "blue"],
        ...         "pick": ["The most consistent response is Response 1"],
        ...     }
        ... )
        >>> run_sync(
        ...     universal_self_consistency(
        ...         Agent("gen", fake.spec()), Agent("pick", fake.spec()), n=3
        ...     ),
        ...     "?",
        ... ).details["chosen"]
        1
    """
    _check(n, "universal_self_consistency")
    opts = PatternOptions(answer, prompts, name)

    async def select(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        entries = _in_sample_order(state)
        text = opts.lib.render(
            "best_of_n/usc", question=state["question"], responses=[e["text"] for e in entries]
        )
        reply = await ask(ctx, selector, conversation(state, text), "select")
        chosen = entries[parse_consistent_index(reply.text, len(entries), selector.name)]
        return {"answer": chosen["answer"], "text": chosen["text"],
                "details": {"chosen": _sample(chosen), "selector": reply.text[:300]}}  # fmt: skip

    return _two_step(opts.name, _generate(generator, opts, prompt, n), select)


def _two_step(name: str, generate: Node, select: Node) -> Graph:
    graph = Graph(name)
    graph.add_node("generate", generate, writes=["transcript"])
    graph.add_node("select", select, writes=["answer", "text", "votes", "details"])
    graph.add_edge(START, "generate")
    graph.add_edge("generate", "select")
    graph.add_edge("select", END)
    return graph


# -- workflow files -------------------------------------------------------------


class BestOfNSpec(PatternSpec):
    """N candidates, each scored by a judge (score 1-10, or a Yes/No verifier)."""

    kind: Literal["best_of_n"]
    generator: AgentSlot
    judge: AgentSlot
    n: int = Field(default=4, ge=1, le=256)
    mode: Literal["score", "verifier"] = "score"
    weighted: bool = False
    answer: AnswerSpec = "boxed"


class KnockoutSpec(PatternSpec):
    """N candidates in a single-elimination bracket under a pairwise judge."""

    kind: Literal["knockout"]
    generator: AgentSlot
    judge: AgentSlot
    n: int = Field(default=8, ge=1, le=256)
    seed: int = 0
    answer: AnswerSpec = "boxed"


class UniversalSelfConsistencySpec(PatternSpec):
    """N responses; a selector names the most consistent one."""

    kind: Literal["universal_self_consistency"]
    generator: AgentSlot
    selector: AgentSlot
    n: int = Field(default=8, ge=1, le=64)
    answer: AnswerSpec = "text"


@register_pattern(BestOfNSpec)
def _build_best_of_n(spec: BestOfNSpec, b: Builder) -> Graph:
    return best_of_n(
        b.slot(spec.generator, "generator"), b.slot(spec.judge, "judge"), n=spec.n, mode=spec.mode,
        weighted=spec.weighted, answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip


@register_pattern(KnockoutSpec)
def _build_knockout(spec: KnockoutSpec, b: Builder) -> Graph:
    return knockout(
        b.slot(spec.generator, "generator"), b.slot(spec.judge, "judge"), n=spec.n, seed=spec.seed,
        answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip


@register_pattern(UniversalSelfConsistencySpec)
def _build_universal_self_consistency(spec: UniversalSelfConsistencySpec, b: Builder) -> Graph:
    return universal_self_consistency(
        b.slot(spec.generator, "generator"), b.slot(spec.selector, "selector"), n=spec.n,
        answer=b.answer(spec.answer), prompts=b.prompts, name=b.name,
    )  # fmt: skip
