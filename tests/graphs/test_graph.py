"""The graph builder's checks, nesting, checkpoint resume and events."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from concilium import GraphError, ModelCallError
from concilium.agents import Agent, FakeModel
from concilium.graphs import END, START, Branch, Graph, reducers, run, stream
from concilium.graphs.patterns import self_consistency


async def _noop(state: Any) -> dict[str, Any]:
    return {}


def test_parallel_node_writing_a_key_without_reducer_is_rejected_at_build() -> None:
    g = Graph("g", state={"results": None})
    g.add_node("work", _noop, writes=["results"], parallel=True)
    g.add_route(START, lambda s: [Branch("work", {})], ["work"]).add_edge("work", END)
    with pytest.raises(
        GraphError, match="'work' runs in parallel and writes 'results', which has no reducer"
    ):
        g.compile()


def test_static_parallel_edges_need_reducers_too() -> None:
    g = Graph("g", state={"x": None})
    g.add_node("a", _noop, writes=["x"]).add_node("b", _noop, writes=["x"])
    g.add_edge(START, "a").add_edge(START, "b")
    with pytest.raises(GraphError, match="no reducer"):
        g.compile()


def test_unknown_node_gets_a_suggestion() -> None:
    g = Graph("g").add_node("answer_it", _noop).add_edge(START, "answr_it")
    with pytest.raises(GraphError, match="did you mean 'answer_it'"):
        g.compile()


def test_undeclared_state_key_is_rejected() -> None:
    g = Graph("g").add_node("a", _noop, writes=["nope"]).add_edge(START, "a")
    with pytest.raises(GraphError, match="not a state key"):
        g.compile()


def test_sync_functions_are_rejected() -> None:
    with pytest.raises(GraphError, match="async function"):
        Graph("g").add_node("a", lambda s: {})  # type: ignore[arg-type]


async def test_node_writing_an_undeclared_key_fails_clearly() -> None:
    async def sneaky(state: Any) -> dict[str, Any]:
        return {"answer": "x", "votes": {}}

    g = Graph("g").add_node("a", sneaky, writes=["answer"]).add_edge(START, "a").add_edge("a", END)
    with pytest.raises(GraphError, match=r"wrote \['votes'\] but declared"):
        await run(g, "q")


async def test_branch_to_a_non_parallel_node_fails_clearly() -> None:
    g = Graph("g").add_node("a", _noop)
    g.add_route(START, lambda s: [Branch("a", {})], ["a"]).add_edge("a", END)
    with pytest.raises(GraphError, match="not a parallel node"):
        await run(g, "q")


async def test_fanout_results_arrive_in_branch_order() -> None:
    import asyncio

    async def work(payload: Any) -> dict[str, Any]:
        await asyncio.sleep(0.01 * (5 - payload["i"]))  # later branches finish first
        return {"results": [payload["i"]]}

    async def join(state: Any) -> dict[str, Any]:
        return {"answer": ",".join(map(str, state["results"]))}

    g = Graph("g", state={"results": reducers.append})
    g.add_node("work", work, writes=["results"], parallel=True).add_node(
        "join", join, writes=["answer"]
    )
    g.add_fanout(START, "work", lambda s: [{"i": i} for i in range(5)])
    g.add_edge("work", "join").add_edge("join", END)
    assert (await run(g, "q")).answer == "0,1,2,3,4"


async def test_a_pattern_nests_as_a_node_of_a_larger_graph() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: "\\boxed{5}")
    inner = self_consistency(Agent("s", fake.spec()), samples=3)

    async def shout(state: Any) -> dict[str, Any]:
        return {"answer": f"{state['draft']}!"}

    g = Graph("outer", state={"draft": None})
    g.add_node("vote", inner, output="draft").add_node("shout", shout, writes=["answer"])
    g.add_edge(START, "vote").add_edge("vote", "shout").add_edge("shout", END)
    result = await run(g, "q")
    assert result.answer == "5!"
    assert [e["sample"] for e in result.transcript] == [0, 1, 2]
    assert result.details["vote"]["votes"]["counts"] == {"5": 3}


async def test_resume_from_sqlite_repeats_no_completed_call(tmp_path) -> None:
    """A run that fails half-way is resumed from its checkpoint + call record:
    branches that had finished are not called again."""
    calls: list[str] = []
    failing = {"on": True}

    def reply(agent: str, i: int, msgs: Any) -> str:
        calls.append(agent)
        return "\\boxed{1}"

    fake = FakeModel(fn=reply)
    from concilium.agents import Capabilities

    flaky_spec = FakeModel(capabilities=Capabilities(n=False))

    async def flaky_chat(spec, api_base, body, headers):  # the 4th sample fails the first time
        if failing["on"] and body.get("seed") == 3:
            raise ModelCallError("boom", model="fake", retryable=False)
        return await fake.chat(spec, api_base, body, headers)

    flaky_spec.chat = flaky_chat  # type: ignore[method-assign]
    graph = self_consistency(Agent("s", flaky_spec.spec(), seed=0), samples=5)
    db = tmp_path / "run.db"
    with pytest.raises(ModelCallError):
        await run(graph, "q", state_path=db, run_id="r1")
    first_calls = len(calls)
    assert first_calls == 4
    failing["on"] = False
    result = await run(graph, "q", state_path=db, run_id="r1", resume=True)
    assert result.answer == "1" and result.votes["counts"] == {"1": 5}
    assert len(calls) == first_calls + 1  # only the failed branch was sent again
    assert result.calls == 1


async def test_runs_with_a_state_path_leave_no_checkpointer_alive(tmp_path) -> None:
    """A long-lived process (serve api, the UI) runs one graph many times, each run
    opening and closing its own checkpointer: the graph must not keep them."""
    from langgraph.checkpoint.base import BaseCheckpointSaver

    fake = FakeModel(fn=lambda agent, i, msgs: "\\boxed{3}")
    graph = self_consistency(Agent("s", fake.spec()), samples=2)

    def savers() -> int:
        gc.collect()
        return sum(isinstance(o, BaseCheckpointSaver) for o in gc.get_objects())

    before = savers()
    for i in range(6):
        result = await run(graph, "q", state_path=tmp_path / "run.db", run_id=f"r{i}")
        assert result.answer == "3"
    assert savers() == before
    again = await run(graph, "q", state_path=tmp_path / "run.db", run_id="r5", resume=True)
    assert again.calls == 0 and again.answer == "3"  # each run still got its checkpointer
    assert graph.compile() is graph.compile()  # without one, compiled once


async def test_stream_yields_progress_then_the_result() -> None:
    fake = FakeModel(fn=lambda agent, i, msgs: "\\boxed{2}")
    events = [e async for e in stream(self_consistency(Agent("s", fake.spec()), samples=2), "1+1?")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "node_started"
    assert "call_started" in kinds and "call_finished" in kinds and "vote" in kinds
    assert kinds[-1] == "result" and events[-1]["result"].answer == "2"
