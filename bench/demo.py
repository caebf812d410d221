"""``concilium demo``: what parallel sampling buys the embedded base model, and what it
costs in time, measured in one session on one engine.

1. The comparison: one sample at temperature 0.8 (the fair single-sample baseline),
   greedy decoding, and the majority of 9 samples drawn in one ``n=9`` request, on a
   shipped task (capitals by default: measured on its 50 items, the expected accuracy
   of one sample is 0.85 [0.80, 0.90] and the vote of 9 0.98 [0.94, 1.00]; docs/engine.md
   has every task), with 95% intervals, McNemar p against the single sample, and the
   majority@k curve with what each k costs (its k = 1 point is the expected accuracy of
   one sample over all 9 draws, steadier than the single draw of the first row).
2. The time: the same prompt answered by one request, by one request with ``n=9``, by
   nine requests at once and by nine requests one after another (median of
   ``repeats``), side by side. The engine batches: nine samples in one request cost
   little more than one, and nine in sequence cost nine times one.

Everything goes through ``concilium.app``: the workflows are the shipped
``base_*.yaml`` files, built once and bound to one ``Session``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from concilium.agents import Agent, Capabilities
from concilium.app import Session, load
from concilium.evals import (
    build_methods,
    default_scorer,
    evaluate,
    load_records,
    render_table,
    summarise,
    write_summary,
)
from concilium.examples import FOLDER
from concilium.graphs import END, START, Graph, RunContext
from concilium.graphs.kit import ask, user
from concilium.graphs.patterns import self_consistency
from concilium.graphs.workflows import Workflow

WORKFLOWS = ("base_sample.yaml", "base_single.yaml", "base_self_consistency.yaml")
SAMPLES = 9


def _sequential(agent: Agent, samples: int) -> Graph:
    """``samples`` requests of one sample each, one after another."""

    async def draw(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        for i in range(samples):
            await ask(ctx, agent, user(state["question"]), f"s{i}")
        return {}

    graph = Graph("sequential")
    graph.add_node("draw", draw, writes=[])
    return graph.add_edge(START, "draw").add_edge("draw", END)


def timing_modes(agent: Agent, samples: int = SAMPLES) -> dict[str, tuple[Graph, int]]:
    """Each way of drawing samples, as a graph, with the requests it sends."""
    apart = replace(agent, model=replace(agent.model, capabilities=Capabilities(n=False)))
    return {
        "one request, 1 sample": (self_consistency(agent, samples=1, answer="text"), 1),
        f"one request, n={samples}": (self_consistency(agent, samples=samples, answer="text"), 1),
        f"{samples} requests at once": (self_consistency(apart, samples=samples, answer="text"), samples),
        f"{samples} requests in sequence": (_sequential(agent, samples), samples),
    }  # fmt: skip


async def sampling_times(
    session: Session, agent: Agent, question: str, repeats: int = 3
) -> list[dict[str, Any]]:
    """Median wall time of each mode on ``question``, measured in turn (round robin,
    so load on the machine falls on every mode alike), with the ratio to one request."""
    modes = timing_modes(agent)
    walls: dict[str, list[float]] = {name: [] for name in modes}
    calls: dict[str, int] = {}
    for _ in range(repeats):
        for name, (graph, _) in modes.items():
            started = time.perf_counter()
            result = await session.run(Workflow.of_graph(graph), question)
            walls[name].append(time.perf_counter() - started)
            calls[name] = result.calls
    base = statistics.median(walls[next(iter(modes))])
    rows: list[dict[str, Any]] = []
    for name, w in walls.items():
        wall = statistics.median(w)
        rows.append(
            {"mode": name, "requests": calls[name], "wall_s": round(wall, 3),
             "vs_one_request": round(wall / base, 2)}
        )  # fmt: skip
    return rows


def render_times(rows: list[dict[str, Any]]) -> str:
    head = f"{'how the samples are drawn':<28} {'requests':>8} {'wall s':>8} {'vs one':>7}"
    lines = [head, "-" * len(head)]
    lines += [
        f"{r['mode']:<28} {r['requests']:>8} {r['wall_s']:>8.2f} {r['vs_one_request']:>6.2f}x"
        for r in rows
    ]
    return "\n".join(lines)


async def measure(
    backend: str, task: str, items: int, out: Path, say: Callable[[str], None], repeats: int = 3
) -> dict[str, Any]:
    records = load_records(FOLDER / "data" / f"{task}.jsonl")[:items]
    methods = build_methods([FOLDER / name for name in WORKFLOWS])
    scorer = default_scorer([r.answer for r in records])
    async with Session(backend, log=say) as session:
        rows = await evaluate(records, methods, session, out, scorer=scorer, concurrency=8)
        sampler = load(FOLDER / "base_self_consistency.yaml").agents["solver"]
        times = await sampling_times(session, sampler, records[0].question, repeats)
    gold = {r.id: r for r in records}

    def predicate(row: Mapping[str, Any]) -> Callable[[Any], bool]:
        record = gold[str(row["id"])]
        return lambda answer: scorer(answer, record.answer, record.choices)

    summary = summarise(rows, [m.name for m in methods], predicate, scorer=scorer)
    _, plots = write_summary(summary, out)
    return {"task": task, "items": len(records), "backend": backend, "methods": summary,
            "times": times, "plots": [str(p) for p in plots]}  # fmt: skip


def main(
    *,
    backend: str = "local",
    task: str = "capitals",
    items: int = 50,
    out: str = ".demo",
    repeats: int = 3,
    json_file: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    import asyncio

    figures = asyncio.run(measure(backend, task, items, Path(out), say, repeats))
    print(f"\n{figures['items']} {task} items; the first method is the single-sample baseline")
    print(render_table(figures["methods"]))
    print(f"\nwhat the samples cost in time (one prompt, median of {repeats}):")
    print(render_times(figures["times"]))
    for plot in figures["plots"]:
        print(f"plot: {plot}")
    if json_file:  # the human output above is the demo; the figures go to a file if asked
        Path(json_file).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures
