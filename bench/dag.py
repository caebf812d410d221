"""``concilium bench dag``: the executor on DAGs of simulated tools, side by side.

Shapes: wide (8 independent calls), deep (a chain of 5), unbalanced (a long call
beside a chain), fan-in (8 calls of different lengths, then one that needs all 8).
Tools sleep for their given duration. For each shape, in one run:

* makespan / critical path of concilium's event-driven executor (goal <= 1.05),
  and of a level-by-level (superstep) executor that waits for each level;
* end to end against the simulated server (a test double; 20 ms to first token,
  10 ms per token): plan_and_execute with a streamed, scripted plan against ReAct
  (one scripted tool call per model turn), and the time from a task's plan line
  arriving to the task starting, for tasks whose inputs were ready.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from concilium.agents import Agent, aclose
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.bench._report import emit
from concilium.graphs import Executor, run
from concilium.graphs.patterns import plan_and_execute, react
from concilium.serving import SimServer
from concilium.tools import Tool, ToolRegistry
from concilium.tools.plans import Task, parse_plan

# shape -> [(duration, dependencies)], tasks numbered from 1
SHAPES: dict[str, list[tuple[float, tuple[int, ...]]]] = {
    "wide": [(0.2, ())] * 8,
    "deep": [(0.1, ())] + [(0.1, (i,)) for i in range(1, 5)],
    "unbalanced": [(0.3, ()), (0.1, ()), (0.1, (2,)), (0.1, (3,)), (0.05, (1, 4))],
    "fan_in_8": [(0.1 + 0.02 * i, ()) for i in range(8)] + [(0.05, tuple(range(1, 9)))],
}


async def work(seconds: float, label: str = "") -> str:
    """Simulated tool: sleep, then return the label."""
    await asyncio.sleep(seconds)
    return label or "done"


TOOLS = ToolRegistry([Tool.from_function(work)])


def plan_text(shape: list[tuple[float, tuple[int, ...]]]) -> str:
    lines = []
    for i, (seconds, deps) in enumerate(shape, start=1):
        label = " ".join(f"${d}" for d in deps) or f"t{i}"
        lines.append(f'{i}. work({seconds}, "{label}")')
    return "\n".join([*lines, f"{len(shape) + 1}. join()<END_OF_PLAN>"])


def critical_path(shape: list[tuple[float, tuple[int, ...]]]) -> float:
    finish: dict[int, float] = {}
    for i, (seconds, deps) in enumerate(shape, start=1):
        finish[i] = max((finish[d] for d in deps), default=0.0) + seconds
    return max(finish.values())


async def superstep(tasks: list[Task]) -> float:
    """The level-by-level baseline: a level starts when the whole previous level is done."""
    level: dict[int, int] = {}
    for t in tasks:
        level[t.index] = 1 + max((level[d] for d in t.deps), default=-1)
    started = time.perf_counter()
    for depth in range(max(level.values()) + 1):  # durations only: results do not change the timing
        await asyncio.gather(
            *(work(t.args["seconds"]) for t in tasks if level[t.index] == depth and not t.is_join)
        )
    return time.perf_counter() - started


async def _executor(shape: list[tuple[float, tuple[int, ...]]], repeats: int) -> dict[str, float]:
    tasks = parse_plan(plan_text(shape), TOOLS)
    event, steps = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        await Executor(TOOLS).run(tasks)
        event.append(time.perf_counter() - started)
        steps.append(await superstep(tasks))
    cp = critical_path(shape)
    return {"critical_path_s": round(cp, 3), "event_driven_s": round(statistics.median(event), 3),
            "superstep_s": round(statistics.median(steps), 3),
            "event_driven_over_cp": round(statistics.median(event) / cp, 3),
            "superstep_over_cp": round(statistics.median(steps) / cp, 3)}  # fmt: skip


async def _end_to_end(shape: list[tuple[float, tuple[int, ...]]]) -> dict[str, float]:
    plan = plan_text(shape)
    steps = [
        f'Thought: next\nAction: work({s}, "t{i}")' for i, (s, _) in enumerate(shape, start=1)
    ] + ["Answer: done"]
    rules = [Rule(agent="planner", replies=[plan]), Rule(agent="joiner", replies=["Action: Finish(done)"]),
             Rule(agent="react", replies=steps)]  # fmt: skip
    config = SimConfig(rules=rules, latency=Latency(ttft=0.02, per_token=0.01))
    async with SimServer(config, process=True) as sim:
        spec = sim.spec()
        graph = plan_and_execute(
            Agent("planner", spec), Agent("joiner", spec), TOOLS, max_replans=0
        )
        started = time.perf_counter()
        result = await run(graph, "run the plan")
        compiled = time.perf_counter() - started
        started = time.perf_counter()
        await run(react(Agent("react", spec), TOOLS, max_steps=len(shape) + 1), "run the plan")
        sequential = time.perf_counter() - started
        await aclose()
    tasks = [t for t in result.details["rounds"][0]["tasks"] if t["tool"] != "join"]
    waits = [t["started"] - max(t["emitted"], t["ready"]) for t in tasks if t["ready"] is not None]
    return {"plan_and_execute_s": round(compiled, 3), "react_s": round(sequential, 3),
            "speedup_over_react": round(sequential / compiled, 2),
            "line_to_start_mean_ms": round(1000 * statistics.mean(waits), 2),
            "line_to_start_max_ms": round(1000 * max(waits), 2)}  # fmt: skip


def main(*, repeats: int = 3, json_file: str | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, shape in SHAPES.items():
        figures[name] = {
            **asyncio.run(_executor(shape, repeats)),
            **asyncio.run(_end_to_end(shape)),
        }
    print(
        f"DAG executor on simulated tools (median of {repeats}); end to end on the simulated server"
    )
    print(
        "| shape | critical path | event-driven | /cp | superstep | /cp | plan_and_execute | ReAct | speedup | line->start mean / max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, f in figures.items():
        print(f"| {name} | {f['critical_path_s']} s | {f['event_driven_s']} s | {f['event_driven_over_cp']} | "
              f"{f['superstep_s']} s | {f['superstep_over_cp']} | {f['plan_and_execute_s']} s | {f['react_s']} s | "
              f"{f['speedup_over_react']}x | {f['line_to_start_mean_ms']} / {f['line_to_start_max_ms']} ms |")  # fmt: skip
    emit(figures, json_file)
    return figures
