"""A pattern of your own, with a kind: for workflow files, from public names only."""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from concilium import SimConfig, SimServer, run
from concilium.agents.sim import Rule
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import (
    AgentSlot,
    Builder,
    PatternSpec,
    Respondent,
    Turn,
    ask,
    conversation,
    register_pattern,
    turn,
)
from concilium.graphs.workflows import build_workflow, parse_workflow


def review(author: Respondent, reviewers: Sequence[Respondent], name: str = "review") -> Graph:
    """The author drafts; every reviewer critiques the draft at once; the author revises."""

    async def draft(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        reply = await ask(ctx, author, conversation(state, state["question"]), "draft")
        return {"text": reply.text, "transcript": [
            turn(ctx, reply, text=reply.text, answer=None, prompt=state["question"], step="draft")]}  # fmt: skip

    async def critique(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt = f"Critique this answer to {state['question']!r}:\n{state['text']}"

        async def one(reviewer: Respondent) -> Turn:
            reply = await ask(ctx, reviewer, conversation(state, prompt), "critique")
            return turn(ctx, reply, text=reply.text, answer=None, prompt=prompt, step="critique")

        notes = await ctx.map(one, reviewers)  # concurrent; one failure cancels the rest
        prompt = f"{state['question']}\nYour draft: {state['text']}\nReviews:\n" + "\n".join(
            n["text"] for n in notes
        )
        reply = await ask(ctx, author, conversation(state, prompt), "revise")
        final = turn(ctx, reply, text=reply.text, answer=reply.text, prompt=prompt, step="revise")
        return {
            "answer": reply.text,
            "transcript": [*notes, final],
            "details": {"reviews": len(notes)},
        }

    graph = Graph(name)
    graph.add_node("draft", draft, writes=["text", "transcript"])
    graph.add_node("critique", critique, writes=["answer", "transcript", "details"])
    graph.add_edge(START, "draft").add_edge("draft", "critique").add_edge("critique", END)
    return graph


class ReviewSpec(PatternSpec):
    kind: Literal["review"]
    author: AgentSlot  # an agent's name, or a nested pattern
    reviewers: list[AgentSlot]


@register_pattern(ReviewSpec)
def build(spec: ReviewSpec, b: Builder) -> Graph:
    reviewers = [b.slot(r, "reviewers", i) for i, r in enumerate(spec.reviewers)]
    return review(b.slot(spec.author, "author"), reviewers, name=b.name)


WORKFLOW = """
name: reviewed
models: {m: {model: hosted_vllm/concilium-sim}}
agents: {ann: {model: m}, ben: {model: m}, cy: {model: m}}
workflow: {kind: review, author: ann, reviewers: [ben, cy]}
"""


async def main() -> None:
    # The simulated server is a test double: these replies are scripted, not a model's.
    script = [Rule(agent="ann", replies=["84", "12 * 7 = 84"]),
              Rule(agent="ben", replies=["show the product"]), Rule(agent="cy", replies=["ok"])]  # fmt: skip
    async with SimServer(SimConfig(rules=script)) as server:
        spec, data, lines = parse_workflow(WORKFLOW)
        workflow = build_workflow(spec, data=data, lines=lines, api_base=server.url)
        result = await run(workflow.graph, "What is 12 * 7?")
    for t in result.transcript:
        print(f"{t.get('step'):>8} {t['agent']}: {t['text']}")
    print(result.answer, result.details, result.calls, "calls")


if __name__ == "__main__":
    asyncio.run(main())
