"""Graph of Thoughts over real HTTP to the simulated server: the paper's sorting GoO."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from concilium import GraphError
from concilium.agents import Agent, AgentReply, Capabilities, FakeModel, Message
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import Operation, graph_of_thoughts
from concilium.graphs.patterns._graph_of_thoughts import sort_errors
from concilium.serving import SimServer

LIST = "[5, 1, 9, 3, 3, 7, 0, 2, 8, 4, 6, 1, 9, 2, 5, 0]"
SORTED = "[0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 7, 8, 9, 9]"
HALF1 = ["[0, 1, 2, 3, 5, 7, 9]", "[0, 1, 2, 3, 3, 5, 7, 9]", "[1, 0, 2, 3, 3, 5, 9, 7]"]  # 1, 0, 2
HALF2 = ["[0, 1, 2, 4, 6, 5, 8, 9]", "[0, 1, 2, 4, 5, 6, 8]", "[0, 1, 2, 4, 5, 6, 8, 9]"]  # 1, 1, 0
MERGES = [
    "[0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 9]",  # a 5 missing: 1
    "[0, 0, 1, 1, 2, 3, 2, 3, 4, 5, 5, 6, 7, 8, 9, 9]",  # one descent: 1
    "[0, 1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 7, 8, 9, 9]",  # a 0 missing: 1
]
RULES = [
    Rule(agent="g", match=r"Sort the[\s\S]*\[5, 1, 9, 3, 3, 7, 0, 2\]", replies=HALF1),
    Rule(agent="g", match=r"Sort the[\s\S]*\[8, 4, 6, 1, 9, 2, 5, 0\]", replies=HALF2),
    Rule(agent="g", match="Merge the", replies=MERGES),
]
GOO = [
    Operation(id="split", op="split", k=2),
    Operation(id="sort1", op="generate", inputs=["split"], part=1, k=3, prompt="graph_of_thoughts/sort"),
    Operation(id="sort2", op="generate", inputs=["split"], part=2, k=3, prompt="graph_of_thoughts/sort"),
    Operation(id="score1", op="score", inputs=["sort1"]),
    Operation(id="score2", op="score", inputs=["sort2"]),
    Operation(id="best1", op="keep_best", inputs=["score1"]),
    Operation(id="best2", op="keep_best", inputs=["score2"]),
    Operation(id="merge", op="aggregate", inputs=["best1", "best2"], k=3, prompt="graph_of_thoughts/merge"),
    Operation(id="score_merge", op="score", inputs=["merge"]),
    Operation(id="best_merge", op="keep_best", inputs=["score_merge"]),
    Operation(id="refine", op="generate", inputs=["best_merge"], k=2, prompt="graph_of_thoughts/refine"),
    Operation(id="score_refine", op="score", inputs=["refine", "best_merge"]),
    Operation(id="final", op="keep_best", inputs=["score_refine"]),
]  # fmt: skip


def test_sort_errors_counts_frequencies_and_descents() -> None:
    assert [sort_errors(t, LIST[:25]) for t in HALF1] == [1.0, 0.0, 2.0]
    assert sort_errors("no list here", LIST) == 300.0
    assert sort_errors(SORTED, LIST) == 0.0


async def test_independent_branches_overlap_keep_best_takes_the_fewest_errors(settled: Any) -> None:
    refined = ["[0, 0, 1, 2, 2, 3, 3, 4, 5, 5, 6, 7, 8, 9, 9]", SORTED]  # 1 and 0 errors
    rules = [*RULES, Rule(agent="g", match="incorrectly sorted", replies=refined)]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0.2))) as sim:
        spec = sim.spec(capabilities=Capabilities(n=True))
        result = await run(graph_of_thoughts(Agent("g", spec), GOO), LIST)
        stats = await settled(sim)
        received = await sim.requests()
    # one request per generate / aggregate; both halves' sorts in flight together
    assert len(received) == 4 and stats["max_in_flight"] == 2
    assert [r["body"]["n"] for r in received] == [3, 3, 3, 2]
    by_op = {o["id"]: o for o in result.details["operations"]}
    assert by_op["sort1"]["wave"] == by_op["sort2"]["wave"]
    assert by_op["score1"]["scores"] == [1.0, 0.0, 2.0] and by_op["score2"]["scores"] == [
        1.0,
        1.0,
        0.0,
    ]
    # the merge saw exactly the two zero-error halves (the kept ones)
    merge_prompt = received[2]["body"]["messages"][-1]["content"]
    assert f"List 1: {HALF1[1]}" in merge_prompt and f"List 2: {HALF2[2]}" in merge_prompt
    # ties keep the first: the refine step saw the first merge, and the original list
    refine_prompt = received[3]["body"]["messages"][-1]["content"]
    assert f"Incorrectly sorted: {MERGES[0]}" in refine_prompt and f"Input: {LIST}" in refine_prompt
    assert by_op["score_refine"]["scores"] == [1.0, 0.0, 1.0]  # two refinements + the kept merge
    assert result.answer == SORTED and result.details["errors"] == 0


async def test_refining_cannot_make_it_worse() -> None:
    worse = ["[9, 8]", "garbage"]
    rules = [*RULES, Rule(agent="g", match="incorrectly sorted", replies=worse)]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        spec = sim.spec(capabilities=Capabilities(n=True))
        result = await run(graph_of_thoughts(Agent("g", spec), GOO), LIST)
    assert result.answer == MERGES[0] and result.details["errors"] == 1


async def test_an_operation_starts_when_its_inputs_end_not_at_a_wave_barrier() -> None:
    """``slow`` (wave 1) answers only once ``refine`` (wave 3, after ``fast`` and its
    score) has asked: operations run wave by wave would never get there."""
    inner = Agent("g", FakeModel(fn=lambda agent, i, messages: "[1, 2, 3]").spec())
    refine_asked = asyncio.Event()

    class Gated:
        name = "g"

        async def run(
            self,
            messages: str | Sequence[Message],
            *,
            n: int = 1,
            key: str | None = None,
            **options: Any,
        ) -> AgentReply:
            if "/refine/" in str(key):
                refine_asked.set()
            if "/slow/" in str(key):
                await refine_asked.wait()
            return await inner.run(messages, n=n, key=key, **options)

    ops = [
        Operation(id="fast", op="generate", prompt="graph_of_thoughts/sort"),
        Operation(id="slow", op="generate", prompt="graph_of_thoughts/sort"),
        Operation(id="score_fast", op="score", inputs=["fast"]),
        Operation(id="refine", op="generate", inputs=["score_fast"], prompt="graph_of_thoughts/refine"),
        Operation(id="score", op="score", inputs=["refine", "slow"]),
        Operation(id="best", op="keep_best", inputs=["score"]),
    ]  # fmt: skip
    async with asyncio.timeout(10):  # a wave barrier would hang here; this fails it instead
        result = await run(graph_of_thoughts(Gated(), ops), "[3, 1, 2]")
    waves = {o["id"]: o["wave"] for o in result.details["operations"]}
    assert waves == {"fast": 1, "slow": 1, "score_fast": 2, "refine": 3, "score": 4, "best": 5}
    # the transcript still lists the waves in order, each in declaration order
    assert [(t.get("step"), t.get("round")) for t in result.transcript] == [
        ("fast", 1),
        ("slow", 1),
        ("refine", 3),
    ]
    assert result.details["waves"] == 5 and result.answer == "[1, 2, 3]"


def test_a_misnamed_input_fails_at_load_time_with_a_suggestion() -> None:
    with pytest.raises(GraphError, match="did you mean 'sort1'"):
        graph_of_thoughts(
            Agent("g", FakeModel({}).spec()),
            [GOO[0], GOO[1], Operation(id="s", op="score", inputs=["sort"])],
        )
