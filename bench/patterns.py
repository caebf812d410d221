"""``concilium bench patterns``: do the patterns' layers and rounds really run concurrently,
and what does adaptive stopping save?

Measured side by side in one run against one simulated server (its own process):

* Mixture-of-Agents, 3 layers x 4 proposers + aggregator, with every call taking
  ``latency`` seconds: concilium's ``mixture_of_agents`` against the reference's
  sequential loop (each proposer called in turn, as its evaluation scripts do).
  The ideal is 3 slowest calls + the aggregator = 4 x latency, not 13.
* Adaptive-Consistency (Beta, 0.95) against fixed-N self-consistency on statistical
  agents at several accuracies: samples used and whether the majority answer agrees.
* DeepConf online against offline DeepConf (``confidence_consistency``, keep the top
  10%) and plain majority (``self_consistency``), all at the same budget of traces, on
  the simulated server's per-token confidence model (wrong traces less confident by
  ``separation``): accuracy with its 95% interval, generated tokens, wall time.

The simulated server is a test double: its answers are not a model's.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from typing import Any

from concilium.agents import Agent, Capabilities, aclose
from concilium.agents.sim import Latency, SimConfig, Statistical, TokenConfidence
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import (
    adaptive_consistency,
    confidence_consistency,
    deepconf_online,
    mixture_of_agents,
    self_consistency,
)
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


# a long trace (the confidence model has room to dip) whose answer comes at its end
DEEPCONF_TEMPLATE = (
    "[simulated reply] " + "reasoning " * 150 + "so the answer is \\boxed{{{answer}}}."
)
DEEPCONF_WINDOW_TOKENS = 32


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion.

    Example:
        >>> [round(x, 3) for x in wilson(27, 30)]
        [0.744, 0.965]
    """
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


async def _deepconf(questions: int, budget: int, separation: float) -> list[dict[str, Any]]:
    stat = Statistical(
        accuracy=0.35, wrong=["1", "2", "3"], template=DEEPCONF_TEMPLATE,
        confidence=TokenConfidence(separation=separation),
    )  # fmt: skip
    config = SimConfig(seed=7, statistical=stat, latency=Latency(ttft=0.002, per_token=0.0))
    window, k = DEEPCONF_WINDOW_TOKENS, 5
    methods = {
        "majority (self_consistency)": lambda a: self_consistency(a, samples=budget),
        "DeepConf offline (confidence_consistency, top 10%)": lambda a: confidence_consistency(
            a, samples=budget, keep_percent=10, window=window, top_logprobs=k
        ),
        "DeepConf online (deepconf_online, top10)": lambda a: deepconf_online(
            a, budget=budget, keep="top10", window=window, top_logprobs=k
        ),
    }
    rows = []
    async with SimServer(config, process=True) as sim:
        spec = sim.spec(capabilities=Capabilities(n=True, logprobs=True))
        for label, build in methods.items():
            hits = tokens = traces = 0
            wall = 0.0
            for i in range(questions):
                a, b = 11 + i, 3 + i % 7
                started = time.perf_counter()
                result = await run(build(Agent("s", spec, seed=10_000 * i)), f"What is {a} * {b}?")
                wall += time.perf_counter() - started
                hits += result.answer == str(a * b)
                tokens += result.usage.completion_tokens
                traces += result.details.get("traces", budget)
            low, high = wilson(hits, questions)
            rows.append({"method": label, "budget": budget, "accuracy": round(hits / questions, 3),
                         "ci95": [round(low, 3), round(high, 3)], "tokens": tokens,
                         "mean_traces": round(traces / questions, 1), "wall_s": round(wall, 2)})  # fmt: skip
        await aclose()
    base = rows[1]["tokens"]
    for row in rows:
        row["tokens_vs_offline"] = round(row["tokens"] / base, 3)
    return rows


def main(
    *, latency: float = 0.2, repeats: int = 3, fixed_n: int = 40, deepconf_questions: int = 40,
    deepconf_budget: int = 64, separation: float = 1.0, json_file: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    moa = asyncio.run(_moa(latency, repeats))
    adaptive = asyncio.run(_adaptive(fixed_n))
    deepconf = (
        asyncio.run(_deepconf(deepconf_questions, deepconf_budget, separation))
        if deepconf_questions
        else []
    )
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
    if deepconf:
        print(
            f"\nDeepConf online vs offline vs majority, budget {deepconf_budget} traces, "
            f"{deepconf_questions} questions; simulated confidence (a test double): right traces "
            f"3.0, wrong {3.0 - separation:g} (token confidence), window {DEEPCONF_WINDOW_TOKENS}"
        )
        print(
            "| method | accuracy (95% CI) | generated tokens | vs offline | mean traces | wall time |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for r in deepconf:
            print(f"| {r['method']} | {r['accuracy']} ({r['ci95'][0]}-{r['ci95'][1]}) | {r['tokens']:,} "
                  f"| {r['tokens_vs_offline']}x | {r['mean_traces']} | {r['wall_s']} s |")  # fmt: skip
    figures = {"mixture_of_agents": moa, "adaptive_consistency": adaptive, "deepconf": deepconf}
    emit(figures, json_file)
    return figures
