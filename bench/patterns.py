"""``concilium bench patterns``: do the patterns' layers and rounds really run concurrently,
and what does adaptive stopping save?

Measured side by side in one run against one simulated server (its own process):

* Mixture-of-Agents, 3 layers x 4 proposers + aggregator, with every call taking
  ``latency`` seconds: concilium's ``mixture_of_agents`` against the reference's
  sequential loop (each proposer called in turn, as its evaluation scripts do).
  The ideal is 3 slowest calls + the aggregator = 4 x latency, not 13.
* Adaptive-Consistency (Beta, 0.95) against fixed-N self-consistency on statistical
  agents at several accuracies: samples used and whether the majority answer agrees.

The simulated server is a test double: its answers are not a model's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from concilium.agents import Agent, Capabilities, aclose
from concilium.agents.sim import Latency, SimConfig, Statistical
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import adaptive_consistency, mixture_of_agents, self_consistency
from concilium.serving import SimServer

QUESTIONS = [
    f"What is {a} * {b}?" for a, b in [(12, 7), (13, 9), (17, 4), (21, 3), (8, 11), (14, 6)]
]


async def _moa(latency: float, repeats: int) -> dict[str, Any]:
    async with SimServer(SimConfig(latency=Latency(fixed=latency)), process=True) as sim:
        spec = sim.spec()
        proposers = [Agent(f"p{i}", spec, max_tokens=32) for i in range(4)]
        aggregator = Agent("agg", spec, max_tokens=32)
        graph = mixture_of_agents(proposers, aggregator, layers=4)  # 3 proposer layers + aggregator

        async def sequential() -> None:  # the reference's evaluation loop: one call at a time
            refs: list[str] = []
            for _layer in range(3):
                outs = []
                for p in proposers:
                    system = "Responses:\n" + "\n".join(f"{i + 1}. {r}" for i, r in enumerate(refs))
                    msgs = ([{"role": "system", "content": system}] if refs else []) + [
                        {"role": "user", "content": "Plan a picnic."}
                    ]
                    outs.append((await p.run(msgs)).text)
                refs = outs
            await aggregator.run([{"role": "user", "content": "Plan a picnic."}])

        times: dict[str, list[float]] = {"concilium": [], "sequential": []}
        calls = 0
        for _ in range(repeats):
            started = time.perf_counter()
            result = await run(graph, "Plan a picnic.")
            times["concilium"].append(time.perf_counter() - started)
            calls = result.calls
            started = time.perf_counter()
            await sequential()
            times["sequential"].append(time.perf_counter() - started)
        await aclose()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "latency_s": latency, "calls": calls, "concilium_s": round(med["concilium"], 3),
        "sequential_s": round(med["sequential"], 3), "ideal_s": round(4 * latency, 3),
        "concilium_in_call_latencies": round(med["concilium"] / latency, 2),
        "sequential_in_call_latencies": round(med["sequential"] / latency, 2),
        "speedup": round(med["sequential"] / med["concilium"], 2),
    }  # fmt: skip


async def _adaptive(fixed_n: int) -> list[dict[str, Any]]:
    rows = []
    for accuracy in (0.9, 0.7, 0.5):
        config = SimConfig(
            seed=1, latency=Latency(fixed=0.0), statistical=Statistical(accuracy=accuracy)
        )
        async with SimServer(config) as sim:
            spec = sim.spec(capabilities=Capabilities(n=False))
            used, agree = [], 0
            for i, question in enumerate(QUESTIONS):
                agent = Agent("s", spec, seed=1000 * i)
                fixed = await run(self_consistency(agent, samples=fixed_n), question)
                adaptive = await run(
                    adaptive_consistency(agent, max_samples=fixed_n, parallel=4), question
                )
                used.append(adaptive.details["samples_used"])
                agree += adaptive.answer == fixed.answer
            await aclose()
        rows.append({"accuracy": accuracy, "fixed_samples": fixed_n, "adaptive_mean_samples": round(statistics.mean(used), 2),
                     "saving": round(fixed_n / statistics.mean(used), 2), "same_answer": f"{agree}/{len(QUESTIONS)}"})  # fmt: skip
    return rows


def main(
    *, latency: float = 0.2, repeats: int = 3, fixed_n: int = 40, json_file: str | None = None
) -> dict[str, Any]:
    moa = asyncio.run(_moa(latency, repeats))
    adaptive = asyncio.run(_adaptive(fixed_n))
    print(
        f"Mixture-of-Agents, 3 layers x 4 proposers + aggregator, {latency * 1000:.0f} ms per call (simulated server)"
    )
    print("| run | wall time | in call latencies |\n| --- | --- | --- |")
    print(
        f"| concilium (layers concurrent) | {moa['concilium_s']} s | {moa['concilium_in_call_latencies']} |"
    )
    print(
        f"| reference-style sequential loop | {moa['sequential_s']} s | {moa['sequential_in_call_latencies']} |"
    )
    print(f"speedup {moa['speedup']}x; ideal {moa['ideal_s']} s (4 call latencies)\n")
    print(
        f"Adaptive-Consistency (Beta 0.95, 4 in flight) vs fixed N = {fixed_n}, {len(QUESTIONS)} questions"
    )
    print(
        "| accuracy | fixed samples | adaptive mean samples | saving | same answer |\n| --- | --- | --- | --- | --- |"
    )
    for r in adaptive:
        print(
            f"| {r['accuracy']} | {r['fixed_samples']} | {r['adaptive_mean_samples']} | {r['saving']}x | {r['same_answer']} |"
        )
    figures = {"mixture_of_agents": moa, "adaptive_consistency": adaptive}
    emit(figures, json_file)
    return figures
