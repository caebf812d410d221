"""ChatEval (Chan et al., ICLR 2024; ``docs/methods.md#chateval``): role-played
referees discuss two answers to a question, then each scores both 1-10.

Communication strategies, ``rounds`` turns per referee:

- ``one_by_one``: referees speak in order; referee i sees every earlier round and
  the referees before it in this round (one call at a time).
- ``simultaneous``: each round all referees speak at once and see only earlier rounds.
- ``summarizer``: as ``simultaneous``, but after each round a summarizer condenses
  the round and referees see the summaries of earlier rounds instead of the messages.

The last round asks for "The score of Assistant 1: x" / "The score of Assistant 2: y".
With ``swap`` (the paper's position debiasing) the discussion also runs with the
answers swapped, concurrently. Aggregation ``average`` (the reference's): per answer,
the sum of every referee's scores over both orders; higher wins, a tie goes to
Assistant 1. ``majority``: each referee's verdict per order (the higher score, or
Tie); Tie only when all counts are equal, else the first maximum in the order
Assistant 1, Assistant 2, Tie.

Choices where the reference differs or is silent: the discussion is shown in the
user message as ``[Name]: text`` lines (the reference sends peers' messages as
assistant turns, which a model may take for its own); the paper's single
summarizer after each round is used (the code summarizes per referee); a final
turn without both score lines is asked once more, with the conversation so far and
a format reminder (the reference re-asks up to 3 times), and a referee whose second
reply is still unparsed abstains: left out of the sums and votes, listed in
``details["abstained"]`` (re-asks in ``details["reasked"]``). The two
answers come from ``[Answer 1]`` / ``[Answer 2]`` markers in the input, or else from
two ``candidates`` agents asked the question first, concurrently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from concilium._errors import GraphError
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    AgentSlot,
    Builder,
    PatternSpec,
    Respondent,
    Turn,
    ask,
    distinct_names,
    history,
    prompt_library,
    register_pattern,
    turn,
    user,
)
from concilium.prompts import PromptLibrary

Strategy = Literal["one_by_one", "simultaneous", "summarizer"]
ROLES = [
    "You are now General Public, one of the referees in this task. You are interested in the "
    "story and looking for updates on the investigation. Please think critically by yourself "
    "and note that it's your responsibility to choose one of which is the better first.",
    "You are now Critic, one of the referees in this task. You will check fluent writing, clear "
    "sentences, and good wording in summary writing. Your job is to question others judgement "
    "to make sure their judgement is well-considered and offer an alternative solution if two "
    "responses are at the same level.",
]
_SCORE = re.compile(r"score of assistant\s*([12])\s*:\s*(\d+(?:\.\d+)?)", re.I)
_MARKED = re.compile(r"^(?P<q>[\s\S]*?)\[Answer 1\](?P<a>[\s\S]*?)\[Answer 2\](?P<b>[\s\S]*)$")


def parse_scores(text: str) -> tuple[float, float] | None:
    """The last "The score of Assistant 1/2: x" lines of a verdict, else None.

    Example:
        >>> parse_scores("fine.\\nThe score of Assistant 1: 8\\nThe score of Assistant 2: 6.5")
        (8.0, 6.5)
    """
    found = {n: float(v) for n, v in _SCORE.findall(text)}
    return (found["1"], found["2"]) if {"1", "2"} <= found.keys() else None


@dataclass
class _Discussion:
    """One discussion (one order of the answers): who said what, and the verdicts."""

    swapped: bool
    past: list[dict[str, Any]]  # the conversation before the question (kit.history)
    messages: list[tuple[int, str, str]] = field(default_factory=list[tuple[int, str, str]])
    summaries: list[str] = field(default_factory=list[str])
    entries: list[Turn] = field(default_factory=list[Turn])
    verdicts: dict[str, tuple[float, float] | None] = field(
        default_factory=dict[str, tuple[float, float] | None]
    )
    reasked: list[str] = field(default_factory=list[str])


def chateval(
    referees: Sequence[Respondent],
    *,
    roles: Sequence[str] | None = None,
    strategy: Strategy = "one_by_one",
    rounds: int = 2,
    summarizer: Respondent | None = None,
    candidates: Sequence[Respondent] = (),
    swap: bool = True,
    aggregation: Literal["average", "majority"] = "average",
    prompts: PromptLibrary | None = None,
    name: str = "chateval",
) -> Graph:
    """A referee team discussing two answers, then scoring them.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs import run_sync
        >>> verdict = "ok\\nThe score of Assistant 1: 7\\nThe score of Assistant 2: 5"
        >>> fake = FakeModel({"r": ["1 looks better", verdict]})
        >>> team = chateval([Agent("r", fake.spec())], swap=False)
        >>> run_sync(team, "2+2? [Answer 1] 4 [Answer 2] 5").answer
        'Assistant 1'
    """
    names = distinct_names(referees, "chateval")
    role_list = list(roles) if roles is not None else [ROLES[i % 2] for i in range(len(names))]
    if len(role_list) != len(names) or rounds < 1:
        raise GraphError(
            f"chateval needs one role per referee ({len(names)} referees, {len(role_list)} "
            f"roles) and rounds >= 1 (got {rounds})"
        )
    if strategy == "summarizer" and summarizer is None:
        raise GraphError("chateval strategy 'summarizer' needs a summarizer agent")
    if candidates and len(candidates) != 2:
        raise GraphError(f"chateval needs exactly 2 candidates, got {len(candidates)}")
    lib = prompt_library(prompts)

    async def evaluate(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        past = history(state)
        question, answers, entries = await _answers(ctx, str(state["question"]), candidates, past)
        orders = [False, True] if swap else [False]
        talks = [_Discussion(s, past) for s in orders]

        async def discuss(talk: _Discussion) -> None:
            pair = (answers[1], answers[0]) if talk.swapped else answers
            for r in range(1, rounds + 1):
                ctx.emit({"type": "round_started", "round": r, "agents": names})
                await _round(ctx, lib, talk, r, r == rounds, question, pair)
                if strategy == "summarizer" and r < rounds and summarizer is not None:
                    await _summarize(ctx, lib, summarizer, talk, r, question)

        async def _round(ctx: RunContext, lib: PromptLibrary, talk: _Discussion, r: int,
                         final: bool, question: str, pair: tuple[str, str]) -> None:  # fmt: skip
            async def speak(i: int) -> tuple[int, str, str]:
                if strategy == "summarizer":
                    seen = [("Summarizer", s) for s in talk.summaries]
                else:  # one_by_one appends as it goes, so this round's earlier speakers are in
                    seen = [(who, text) for _, who, text in talk.messages]
                text = lib.render("chateval/referee", question=question, answer1=pair[0],
                                  answer2=pair[1], role=role_list[i], referee=names[i],
                                  others=len(names) - 1, discussion=seen, final=final)  # fmt: skip
                tag = f"{'swap' if talk.swapped else 'main'}/r{r}"
                role = "swapped" if talk.swapped else "referee"
                reply = await ask(ctx, referees[i], [*talk.past, *user(text)], tag)
                talk.entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text,
                                         round=r, role=role, saw=[w for w, _ in seen]))  # fmt: skip
                said = reply.text
                if final:
                    said = await _verdict(ctx, lib, referees[i], talk, text, said, tag, r, role)
                return r, names[i], said

            if strategy == "one_by_one":
                for i in range(len(names)):
                    talk.messages.append(await speak(i))
            else:
                talk.messages.extend(await ctx.gather(*(speak(i) for i in range(len(names)))))

        await ctx.gather(*(discuss(t) for t in talks))
        for t in talks:
            entries.extend(t.entries)
        winner, tally = _aggregate(talks, aggregation)
        return {"answer": winner, "text": winner, "transcript": entries,
                "details": {"tally": tally, "strategy": strategy, "rounds": rounds,
                            "reasked": [{"swapped": t.swapped, "referees": t.reasked} for t in talks],
                            "abstained": [{"swapped": t.swapped, "referees": [n for n, v in t.verdicts.items()
                                           if v is None]} for t in talks],
                            "verdicts": [{"swapped": t.swapped, **{n: list(v) if v else None
                                          for n, v in t.verdicts.items()}} for t in talks]}}  # fmt: skip

    graph = Graph(name)
    graph.add_node("evaluate", evaluate, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "evaluate")
    graph.add_edge("evaluate", END)
    return graph


async def _answers(
    ctx: RunContext, given: str, candidates: Sequence[Respondent], past: list[dict[str, Any]]
) -> tuple[str, tuple[str, str], list[Turn]]:
    """The question and the two answers: from the input's markers, or the candidates'."""
    marked = _MARKED.match(given)
    if marked:
        return marked["q"].strip(), (marked["a"].strip(), marked["b"].strip()), []
    if not candidates:
        raise GraphError(
            "chateval needs two answers: write the input as '<question> [Answer 1] ... "
            "[Answer 2] ...', or give the pattern two candidates agents"
        )
    asked = [*past, *user(given)]
    replies = await ctx.gather(*(ask(ctx, c, asked, "answer") for c in candidates))
    entries = [turn(ctx, r, text=r.text, answer=None, prompt=given, role="candidate")
               for r in replies]  # fmt: skip
    return given, (replies[0].text, replies[1].text), entries


async def _verdict(
    ctx: RunContext, lib: PromptLibrary, referee: Respondent, talk: _Discussion, prompt: str,
    said: str, tag: str, r: int, role: str,
) -> str:  # fmt: skip
    """Record the referee's final scores: re-asked once with a format reminder when
    unparsed, then ``None`` (an abstention). Returns the text that stands."""
    verdict = parse_scores(said)
    if verdict is None:
        talk.reasked.append(referee.name)
        reminder = lib.render("chateval/reminder")
        again = [*talk.past, *user(prompt), {"role": "assistant", "content": said},
                 *user(reminder)]  # fmt: skip
        retry = await ask(ctx, referee, again, f"{tag}/reask")
        talk.entries.append(turn(ctx, retry, text=retry.text, answer=None, prompt=reminder,
                                 round=r, role=role, step="reask"))  # fmt: skip
        said, verdict = retry.text, parse_scores(retry.text)
    talk.verdicts[referee.name] = verdict
    return said


async def _summarize(
    ctx: RunContext, lib: PromptLibrary, summarizer: Respondent, talk: _Discussion, r: int,
    question: str,
) -> None:  # fmt: skip
    said = [(who, text) for rr, who, text in talk.messages if rr == r]
    text = lib.render("chateval/summarize", question=question, discussion=said)
    tag = f"{'swap' if talk.swapped else 'main'}/s{r}"
    reply = await ask(ctx, summarizer, [*talk.past, *user(text)], tag)
    talk.entries.append(turn(ctx, reply, text=reply.text, answer=None, prompt=text, round=r,
                             role="summarizer", saw=[w for w, _ in said]))  # fmt: skip
    talk.summaries.append(reply.text)


def _aggregate(talks: list[_Discussion], how: str) -> tuple[str, dict[str, float]]:
    """The winner and the tally; swapped verdicts are mapped back to the original order."""
    pairs = [(v[1], v[0]) if t.swapped else v for t in talks for v in t.verdicts.values() if v]
    if how == "average":
        tally = {"Assistant 1": sum(a for a, _ in pairs), "Assistant 2": sum(b for _, b in pairs)}
        winner = "Assistant 2" if tally["Assistant 2"] > tally["Assistant 1"] else "Assistant 1"
        return winner, tally
    tally = {"Assistant 1": 0.0, "Assistant 2": 0.0, "Tie": 0.0}
    for a, b in pairs:
        tally["Assistant 1" if a > b else "Assistant 2" if b > a else "Tie"] += 1
    if len(set(tally.values())) == 1:
        return "Tie", tally
    return max(tally, key=lambda k: tally[k]), tally  # first maximum, in order


# -- workflow files -------------------------------------------------------------


class ChatEvalSpec(PatternSpec):
    """Role-played referees discuss two answers, then score them."""

    kind: Literal["chateval"]
    referees: list[AgentSlot] = Field(min_length=1)
    roles: list[str] | None = None
    strategy: Strategy = "one_by_one"
    rounds: int = Field(default=2, ge=1, le=20)
    summarizer: AgentSlot | None = None
    candidates: list[AgentSlot] = Field(default_factory=list[AgentSlot], max_length=2)
    swap: bool = True
    aggregation: Literal["average", "majority"] = "average"


@register_pattern(ChatEvalSpec)
def _build(spec: ChatEvalSpec, b: Builder) -> Graph:
    return chateval(
        [b.slot(r, "referees", i) for i, r in enumerate(spec.referees)], roles=spec.roles,
        strategy=spec.strategy, rounds=spec.rounds,
        summarizer=b.optional(spec.summarizer, "summarizer"),
        candidates=[b.slot(c, "candidates", i) for i, c in enumerate(spec.candidates)],
        swap=spec.swap, aggregation=spec.aggregation, prompts=b.prompts, name=b.name,
    )  # fmt: skip
