"""Adaptive-Consistency's stopping rules (hand-checked against the rules in docs/methods.md) and the
pattern over real HTTP: samples used, and cancellation of the ones in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import current_run, run
from concilium.graphs.patterns import adaptive_consistency
from concilium.graphs.patterns._adaptive import beta_confidence, should_stop
from concilium.serving import SimServer


def stop_point(stream: str, rule: str = "beta") -> int | None:
    for k in range(1, len(stream) + 1):
        if should_stop(list(stream[:k]), rule):
            return k
    return None


def test_beta_needs_these_majorities_for_each_runner_up_count() -> None:
    needed = [min(a for a in range(1, 40) if beta_confidence(a, b) >= 0.95) for b in range(6)]
    assert needed == [4, 6, 8, 9, 11, 12]
    assert beta_confidence(3, 3) == pytest.approx(0.5)
    assert beta_confidence(9, 3) == pytest.approx(0.9539, abs=1e-4)


@pytest.mark.parametrize(
    "stream, rule, stops_at",
    [("AAAA", "beta", 4), ("ABAAAAA", "beta", 7), ("ABCAAAAA", "beta", 8), ("ABABAAAAAA", "beta", 10),
     ("ABAAA", "majority", 5), ("ABAAA", "entropy", 5), ("A", "beta", None)],
)  # fmt: skip
def test_reference_streams_stop_where_the_reference_stops(
    stream: str, rule: str, stops_at: int | None
) -> None:
    assert stop_point(stream, rule) == stops_at


async def test_one_at_a_time_it_uses_exactly_the_samples_the_rule_needs() -> None:
    replies = [f"\\boxed{{{c}}}" for c in "ABAAAAAAAA"]
    async with SimServer(
        SimConfig(rules=[Rule(agent="s", replies=replies)], latency=Latency(fixed=0))
    ) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        result = await run(adaptive_consistency(Agent("s", spec), parallel=1), "q")
        assert len(await sim.requests()) == 7
    assert (
        result.answer == "A"
        and result.details["samples_used"] == 7
        and result.details["stopped_by_rule"]
    )
    assert result.votes["counts"] == {"A": 6, "B": 1}


async def test_samples_still_in_flight_are_cancelled_when_the_rule_stops() -> None:
    short, long = "\\boxed{7}", "think " * 300 + "\\boxed{7}"
    rules = [Rule(agent="s", replies=[short, short, short, short, long, long, long, long])]
    config = SimConfig(rules=rules, latency=Latency(ttft=0.05, per_token=0.01))
    async with SimServer(config, process=True) as sim:
        spec = sim.spec(capabilities=Capabilities(n=False))
        result = await run(
            adaptive_consistency(Agent("s", spec, seed=0), parallel=8, max_samples=40), "q"
        )
        stats = await sim.stats()
    assert result.details["samples_used"] == 4  # four quick sevens settle it (P = 0.969)
    # 8 in flight, topped up as the quick ones return; every one still running at the stop is cancelled
    assert stats["requests"] >= 8 and stats["completed"] == 4
    assert stats["cancelled"] == stats["requests"] - 4 and stats["in_flight"] == 0


async def test_the_budget_caps_an_unsettled_question() -> None:
    replies = [f"\\boxed{{{c}}}" for c in "ABCDEF"]
    async with SimServer(
        SimConfig(rules=[Rule(agent="s", replies=replies)], latency=Latency(fixed=0))
    ) as sim:
        result = await run(
            adaptive_consistency(Agent("s", sim.spec()), parallel=2, max_samples=6), "q"
        )
    assert result.details["samples_used"] == 6 and not result.details["stopped_by_rule"]


# ------------------------------------------- ctx.map_until, the kit's early stop


async def test_map_until_cancels_the_draws_in_flight_at_the_stop_and_drains_them() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def draw(i: int) -> int:
        started.append(i)
        if i >= 2:  # these never finish on their own
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
        return i

    got = await current_run().map_until(draw, range(10), stop=lambda got: len(got) == 2, parallel=4)
    assert got == [0, 1] and started[:4] == [0, 1, 2, 3] and len(started) <= 6
    assert (
        sorted(cancelled) == started[2:]
    )  # every one still running was cancelled before the return


async def test_map_until_a_failing_draw_cancels_the_rest_and_surfaces_as_itself() -> None:
    cancelled: list[int] = []

    async def draw(i: int) -> int:
        if i == 1:
            await asyncio.sleep(0)
            raise ValueError("draw 1 broke")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    with pytest.raises(ValueError, match="draw 1 broke"):
        await current_run().map_until(draw, range(10), stop=lambda got: False, parallel=3)
    assert sorted(cancelled) == [0, 2]


async def test_map_until_reports_arrivals_in_order_ties_in_item_order() -> None:
    gates = [asyncio.Event() for _ in range(3)]

    async def draw(i: int) -> int:
        await gates[i].wait()
        return i

    def stop(got: Sequence[int]) -> bool:
        gates[0].set()  # the first item may finish only once the others were reported
        return False

    async def release() -> None:
        gates[2].set()  # 2 wakes before 1, in the same step: a tie, reported in item order
        gates[1].set()

    opener = asyncio.ensure_future(release())
    got = await current_run().map_until(draw, range(3), stop=stop, parallel=3)
    await opener
    assert got == [1, 2, 0]
