"""``concilium bench faults``: do runs complete under injected faults, and at what
cost in requests and in tail time?

``runs`` small debates (3 agents, 3 rounds: 9 calls, 3 rounds one after another)
run one after another against one simulated server in its own process, which
answers 5% of requests with 503, 2% with 429 and leaves 1% hanging (seeded).
Calls retry with the default ``RetryPolicy``; the calls are not streamed. The drill
runs twice, side by side: with the model's default timeouts (``timeout`` 120 s: a
hung request is given up at the deadline the transport learns from the replica's
own replies, a few reply times), and with ``timeout`` tuned to ``hang_factor`` x the
call latency. Reported for each, with the issue's goals:

* completed runs (goal: all of them);
* requests the server received over the minimum, one request per call made
  (goal: <= 1.1x). Each injected fault costs one request, so with 8% of requests
  failing the floor is about 1/(1 - 0.08) = 1.087x; the requests beyond one per
  call and one per fault are what the client wasted (goal: 0);
* the slowest run over the median run (goal: <= 3x).

The floor is printed for the faults the seeded server actually drew: at 1,000
requests the drawn share varies by seed (seed 7 draws 10%, so even a client that
wastes nothing sends 1.111x; about one seed in ten lands over 1.1x that way).

The simulated server is a test double: its answers are not a model's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from concilium.agents import Agent, aclose
from concilium.agents.sim import Faults, Latency, SimConfig
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import debate
from concilium.serving import SimServer

MIX = Faults(error_rate=0.05, error_status=503, rate_limit_rate=0.02, hang_rate=0.01)


async def _runs(runs: int, latency: float, model_timeout: float | None) -> dict[str, Any]:
    config = SimConfig(seed=7, latency=Latency(fixed=latency), faults=MIX)
    seconds: list[float] = []
    failures: list[str] = []
    calls = 0
    async with SimServer(config, process=True) as sim:
        spec = sim.spec() if model_timeout is None else sim.spec(timeout=model_timeout)
        team = [Agent(f"a{i}", spec, max_tokens=32) for i in range(3)]
        graph = debate(team, rounds=3)
        for i in range(runs):
            started = time.perf_counter()
            try:
                result = await run(graph, f"What is {i % 20 + 2} * 7?")
            except Exception as exc:  # a failed run is what this counts
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            seconds.append(time.perf_counter() - started)
            calls += result.calls
        stats = await sim.stats()
        await aclose()
    median = statistics.median(seconds) if seconds else 0.0
    faults = stats["errors"] + stats["cancelled"]
    return {
        "runs": runs,
        "completed": len(seconds),
        "completed_ratio": round(len(seconds) / runs, 3),
        "calls": calls,
        "requests": stats["requests"],
        "requests_over_minimum": round(stats["requests"] / calls, 3) if calls else None,
        "faults_injected": stats["errors"] + stats["cancelled"],  # 503/429s, and hangs given up
        # the share of requests the seeded server faulted (the mix asks 8%: about one seed in
        # ten draws 10% over 1,000 requests), and the ratio a client wasting nothing would get
        "fault_rate_drawn": round(faults / stats["requests"], 4) if stats["requests"] else None,
        "floor_for_faults_drawn": round((calls + faults) / calls, 3) if calls else None,
        # requests beyond one per call and one per injected fault: retries wasted by concilium
        "extra_beyond_faults": stats["requests"] - calls - stats["errors"] - stats["cancelled"],
        "median_run_s": round(median, 3),
        "slowest_run_s": round(max(seconds, default=0.0), 3),
        "slowest_over_median": round(max(seconds) / median, 2) if median else None,
        "slowest_runs_s": [round(x, 3) for x in sorted(seconds)[-5:]],
        "latency_s": latency,
        "timeout_s": round(spec.timeout, 3),
        "failures": failures[:5],
    }


def main(
    *,
    runs: int = 100,
    latency: float = 0.2,
    hang_factor: float = 4.0,
    json_file: str | None = None,
) -> dict[str, Any]:
    settings = {"default": None, "tuned": round(hang_factor * latency, 3)}
    results = {name: asyncio.run(_runs(runs, latency, t)) for name, t in settings.items()}
    d, t = results["default"], results["tuned"]
    print(
        f"{runs} debates (3 agents x 3 rounds) under 5% 503 + 2% 429 + 1% hangs; "
        f"{latency * 1000:.0f} ms per call (simulated server); default timeouts "
        f"(timeout {d['timeout_s']:g} s) beside timeout tuned to {t['timeout_s']:g} s"
    )
    rows = [
        ("completed runs", lambda f: f"{f['completed']}/{f['runs']}", "all"),
        ("requests over the minimum",
         lambda f: f"{f['requests_over_minimum']}x ({f['requests']} for {f['calls']} calls)",
         "<= 1.1x"),
        ("requests beyond one per call and one per fault",
         lambda f: f"{f['extra_beyond_faults']} ({f['faults_injected']} faults injected)", "0"),
        ("floor: a client wasting nothing, for the faults drawn",
         lambda f: f"{f['floor_for_faults_drawn']}x ({f['fault_rate_drawn']:.1%} faulted)", ""),
        ("slowest run over the median",
         lambda f: f"{f['slowest_over_median']}x ({f['slowest_run_s']} s / {f['median_run_s']} s)",
         "<= 3x"),
    ]  # fmt: skip
    print("| measure | default timeouts | timeout tuned | goal |\n| --- | --- | --- | --- |")
    for label, cell, goal in rows:
        print(f"| {label} | {cell(d)} | {cell(t)} | {goal} |")
    print("(the mix's 8% of requests faulted gives a floor of 1.087x)")
    for name, f in results.items():
        for failure in f["failures"]:
            print(f"failed ({name}): {failure}")
    emit(results, json_file)
    return results
