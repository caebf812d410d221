"""A failed run still reports what it did: its error carries a partial ``RunResult``
(usage, calls, the turns taken), and ``concilium run --json`` prints it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget
from concilium.graphs import END, START, Event, Graph, partial_result, run
from concilium.graphs.patterns import debate
from concilium.serving import SimServer

ROOT = Path(__file__).resolve().parents[2]


async def test_a_run_over_budget_raises_with_its_partial_result(sim: SimServer) -> None:
    agents = [Agent(name, sim.spec(), max_tokens=64) for name in ("alice", "bob", "carol")]
    events: list[Event] = []
    with pytest.raises(BudgetExceeded) as info:
        await run(debate(agents, rounds=3), "What is 12 * 7?", budget=Budget(max_calls=4),
                  on_event=events.append)  # fmt: skip
    done = partial_result(info.value)
    assert done is not None and done.partial and done.answer is None
    assert done.calls == 3 and done.usage.total_tokens > 0  # the 4th was cancelled in flight
    first_round = [(t["agent"], t.get("round")) for t in done.transcript[:3]]
    assert sorted(first_round) == [("alice", 1), ("bob", 1), ("carol", 1)]
    assert all("[simulated reply]" in t["text"] for t in done.transcript)
    assert len(done.transcript) == sum(e["type"] == "turn" for e in events)  # the listener too
    as_json = done.to_json()
    assert as_json["partial"] is True and "budget exceeded" in as_json["error"]
    assert as_json["usage"]["prompt_tokens"] == done.usage.prompt_tokens


async def test_any_failure_carries_the_partial_result() -> None:
    async def fail(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the node broke")

    graph = Graph("broken").add_node("fail", fail, writes=["answer"])
    graph.add_edge(START, "fail").add_edge("fail", END)
    with pytest.raises(RuntimeError, match="the node broke") as info:
        await run(graph, "q")
    done = partial_result(info.value)
    assert done is not None and done.partial and done.error == "the node broke"
    assert done.calls == 0 and done.transcript == []
    assert partial_result(RuntimeError("not from a run")) is None


async def test_a_finished_run_is_not_partial(sim: SimServer) -> None:
    result = await run(debate([Agent("a", sim.spec()), Agent("b", sim.spec())], rounds=1), "2+2?")
    assert not result.partial and result.error is None
    assert result.to_json()["partial"] is False


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "concilium", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_run_json_prints_the_partial_result_of_a_run_over_budget() -> None:
    out = cli("run", "examples/debate.yaml", "-b", "sim", "-i", "What is 12 * 7?",
              "--json", "--max-tokens", "500")  # fmt: skip
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["partial"] is True and "budget exceeded" in result["error"]
    usage = result["usage"]
    assert 0 < usage["prompt_tokens"] + usage["completion_tokens"] <= 500
    assert result["calls"] >= 3 and result["answer"] is None
    assert result["transcript"] and all(
        "[simulated reply]" in t["text"] for t in result["transcript"]
    )
    assert "budget exceeded" in out.stderr and "Traceback" not in out.stderr


def test_run_prints_the_usage_so_far_and_the_error_without_a_traceback() -> None:
    out = cli("run", "examples/debate.yaml", "-b", "sim", "-i", "What is 12 * 7?",
              "--max-tokens", "500")  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert re.search(
        r"usage so far: [1-9]\d* calls, \d+ prompt \+ \d+ completion tokens", out.stderr
    )
    assert "run failed: budget exceeded" in out.stderr and "the limit is 500" in out.stderr
    assert "Traceback" not in out.stderr
