"""Choosing one of N candidates with a judge (``METHODS.md`` sections 6c and 8).

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

import asyncio
import math
import random
import re
from typing import Any, Mapping
from typing import Literal

from pydantic import Field

from concilium._errors import GraphError, OutputParseError
from concilium.agents import AgentReply
from concilium.graphs import AgentSlot, AnswerSpec, Builder, PatternSpec, register_pattern
from concilium.graphs import END, START, AnswerFormat, Graph, RunContext, answer_format, majority_vote
from concilium.prompts import PromptLibrary

from ._common import Respondent, ask, library, sample_turns, solve_messages

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


async def _candidates(
    ctx: RunContext, generator: Respondent, state: Mapping[str, Any], lib: PromptLibrary,
    prompt: str, fmt: AnswerFormat, n: int,
) -> list[dict[str, Any]]:  # fmt: skip
    reply = await ask(ctx, generator, solve_messages(state, lib, prompt, fmt), "generate", n=n)
    return sample_turns(ctx, reply, fmt, state["question"])


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
        >>> fake = FakeModel({"gen": ["\\\\boxed{1}", "\\\\boxed{2}"], "judge": ["Score: 3", "Score: 9"]})
        >>> run_sync(best_of_n(Agent("gen", fake.spec()), Agent("judge", fake.spec()), n=2), "?").answer
        '2'
    """
    _check(n, "best_of_n")
    if mode not in ("score", "verifier"):
        raise GraphError(f"best_of_n mode {mode!r} is not one of 'score', 'verifier'")
    fmt = answer if isinstance(answer, AnswerFormat) else answer_format(answer)
    lib = library(prompts)

    async def generate(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"transcript": await _candidates(ctx, generator, state, lib, prompt, fmt, n)}

    async def judge_one(ctx: RunContext, question: str, entry: dict[str, Any]) -> tuple[float | None, str]:
        if mode == "verifier":
            text = lib.render("best_of_n/verify", question=question, candidate=entry["text"])
            reply = await ask(ctx, judge, text, f"verify{entry['sample']}", max_tokens=1, logprobs=True, top_logprobs=5)
            return yes_probability(reply), reply.text
        text = lib.render("best_of_n/score", question=question, candidate=entry["text"])
        reply = await ask(ctx, judge, text, f"score{entry['sample']}")
        return parse_score(reply.text), reply.text

    async def select(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        entries = sorted(state["transcript"], key=lambda e: e["sample"])
        verdicts = await asyncio.gather(*(judge_one(ctx, state["question"], e) for e in entries))
        scores = [s if s is not None else 0.0 for s, _ in verdicts]
        table = [{"sample": e["sample"], "answer": e["answer"], "score": s, "judged": v[:200]}
                 for e, s, (_, v) in zip(entries, scores, verdicts)]  # fmt: skip
        if weighted:
            totals: dict[str, float] = {}
            for e, s in zip(entries, scores):
                if e["answer"] is not None:
                    totals[e["answer"]] = totals.get(e["answer"], 0.0) + s
            winner = max(totals, key=totals.__getitem__) if totals else None
            best = next((e for e in entries if e["answer"] == winner), entries[0])
        else:
            best = entries[max(range(len(entries)), key=lambda i: scores[i])]  # first of equals
            winner = best["answer"]
        return {"answer": winner, "text": best["text"],
                "votes": majority_vote([e["answer"] for e in entries]).as_dict(),
                "details": {"mode": mode, "weighted": weighted, "candidates": table, "chosen": best["sample"]}}  # fmt: skip

    return _two_step(name, generate, select)


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
        >>> fake = FakeModel({"gen": ["\\\\boxed{1}", "\\\\boxed{2}", "\\\\boxed{3}"], "judge": ["Winner: 2"]})
        >>> result = run_sync(knockout(Agent("gen", fake.spec()), Agent("judge", fake.spec()), n=3), "?")
        >>> result.calls, len(result.details["bracket"])
        (3, 2)
    """
    _check(n, "knockout")
    fmt = answer if isinstance(answer, AnswerFormat) else answer_format(answer)
    lib = library(prompts)

    async def generate(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"transcript": await _candidates(ctx, generator, state, lib, prompt, fmt, n)}

    async def match(ctx: RunContext, question: str, r: int, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        text = lib.render("best_of_n/pair", question=question, first=a["text"], second=b["text"])
        reply = await ask(ctx, judge, text, f"r{r}/{a['sample']}v{b['sample']}")
        verdict = parse_winner(reply.text)
        return {"pair": [a["sample"], b["sample"]], "winner": (b if verdict == 2 else a)["sample"],
                "tie_break": verdict is None}  # fmt: skip

    async def tournament(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        by_sample = {e["sample"]: e for e in state["transcript"]}
        alive = sorted(by_sample)
        random.Random(seed).shuffle(alive)
        bracket: list[dict[str, Any]] = []
        r = 0
        while len(alive) > 1:
            r += 1
            ctx.emit({"type": "round_started", "round": r, "agents": [judge.name]})
            ahead = [alive.pop()] if len(alive) % 2 else []  # the odd one out has a bye
            pairs = [(by_sample[alive[i]], by_sample[alive[i + 1]]) for i in range(0, len(alive), 2)]
            results = await asyncio.gather(*(match(ctx, state["question"], r, a, b) for a, b in pairs))
            bracket.append({"round": r, "bye": ahead[0] if ahead else None, "matches": results})
            alive = ahead + [m["winner"] for m in results]
        champion = by_sample[alive[0]]
        return {"answer": champion["answer"], "text": champion["text"],
                "votes": majority_vote([e["answer"] for e in by_sample.values()]).as_dict(),
                "details": {"bracket": bracket, "champion": champion["sample"], "seed": seed}}  # fmt: skip

    return _two_step(name, generate, tournament)


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
        >>> fake = FakeModel({"gen": ["red", "blue", "blue"],
        ...                   "pick": ["The most consistent response is Response 1"]})
        >>> run_sync(universal_self_consistency(Agent("gen", fake.spec()), Agent("pick", fake.spec()), n=3), "?").details["chosen"]
        1
    """
    _check(n, "universal_self_consistency")
    fmt = answer if isinstance(answer, AnswerFormat) else answer_format(answer)
    lib = library(prompts)

    async def generate(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"transcript": await _candidates(ctx, generator, state, lib, prompt, fmt, n)}

    async def select(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        entries = sorted(state["transcript"], key=lambda e: e["sample"])
        text = lib.render("best_of_n/usc", question=state["question"], responses=[e["text"] for e in entries])
        reply = await ask(ctx, selector, text, "select")
        chosen = entries[parse_consistent_index(reply.text, len(entries), selector.name)]
        return {"answer": chosen["answer"], "text": chosen["text"],
                "details": {"chosen": chosen["sample"], "selector": reply.text[:300]}}  # fmt: skip

    return _two_step(name, generate, select)


def _two_step(name: str, generate: Any, select: Any) -> Graph:
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
