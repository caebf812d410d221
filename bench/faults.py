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

Then (``router_runs`` > 0) such debates go through vllm-router (``cache_aware``, as concilium starts
it: ``--disable-retries``, health-checked every second) in front of two simulated
replicas, twice: one replica killed mid-eval (SIGKILL while a debate's calls are in
flight), and one replica that answers 503 to every request while its ``/health``
stays up. Reported: completed runs and failures, calls, concilium's retries, the
requests the replicas counted and the answers they served (a call answered twice
would show as answers over calls). Skipped, and said, when vllm-router is not
installed.

The simulated server is a test double: its answers are not a model's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from concilium._errors import UserError
from concilium.agents import Agent, Capabilities, ModelSpec, aclose
from concilium.agents.sim import Faults, Latency, SimConfig
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import debate
from concilium.serving import SimServer
from concilium.serving.cluster import router_binary, run_router

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


async def _routed(runs: int, latency: float, fault: str) -> dict[str, Any]:
    """``runs`` debates through vllm-router in front of two simulated replicas;
    ``fault`` is ``killed`` (replica 0 SIGKILLed mid-eval) or ``503`` (replica 0
    answers 503 to every request, its /health still ok)."""
    sick = Faults(error_rate=1.0, error_status=503) if fault == "503" else Faults()
    configs = [SimConfig(seed=0, latency=Latency(fixed=latency), faults=sick),
               SimConfig(seed=1, latency=Latency(fixed=latency))]  # fmt: skip
    failures: list[str] = []
    calls = retries = 0
    at_kill: dict[str, Any] = {"requests": 0, "completed": 0, "errors": 0, "in_flight": 0}
    async with SimServer(configs[0], process=True) as first, SimServer(configs[1], process=True) as second:  # fmt: skip
        async with run_router([first.url, second.url], notice=lambda _: None) as router:
            spec = ModelSpec("hosted_vllm/concilium-sim", api_base=router.url, timeout=30,
                             capabilities=Capabilities(n=False))  # fmt: skip
            graph = debate([Agent(f"a{i}", spec, max_tokens=32) for i in range(3)], rounds=3)
            for i in range(runs):
                events: list[Any] = []
                task = asyncio.ensure_future(run(graph, f"What is {i % 20 + 2} * 7?", on_event=events.append))  # fmt: skip
                if fault == "killed" and i == runs // 2:
                    await asyncio.sleep(latency / 2)  # the first round's calls are in flight
                    at_kill = await first.stats()
                    first.kill()
                try:
                    result = await task
                except Exception as exc:  # a failed run is what this counts
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                finally:
                    retries += sum(e["type"] == "call_retry" for e in events)
                calls += result.calls
            stats = [at_kill if fault == "killed" else await first.stats(), await second.stats()]
            await aclose()
    return {
        "fault": "replica killed mid-eval" if fault == "killed" else "replica answering 503",
        "runs": runs,
        "completed": runs - len(failures),
        "calls": calls,
        "retries": retries,
        # replica 0's counters at the kill when it was killed (its in-flight requests lost)
        "requests_per_replica": [s["requests"] for s in stats],
        "errors_per_replica": [s["errors"] for s in stats],
        "in_flight_at_kill": at_kill["in_flight"] if fault == "killed" else None,
        "answers": sum(s["completed"] for s in stats),
        "failures": failures[:5],
    }


def router_drills(runs: int, latency: float) -> list[dict[str, Any]] | str:
    """The two drills through vllm-router: a replica killed mid-eval, then one answering 503."""
    try:
        router_binary()
    except UserError as exc:
        return f"router drills skipped: {exc}"
    return [asyncio.run(_routed(runs, latency, fault)) for fault in ("killed", "503")]


def main(
    *,
    runs: int = 100,
    latency: float = 0.2,
    hang_factor: float = 4.0,
    router_runs: int = 0,
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
    if not router_runs:
        emit(results, json_file)
        return results
    routed = router_drills(router_runs, latency)
    print(f"\n{router_runs} such debates through vllm-router (cache_aware, --disable-retries) "
          "in front of 2 simulated replicas")  # fmt: skip
    if isinstance(routed, str):
        print(routed)
    else:
        print("| fault | completed runs | calls | concilium retries | requests per replica "
              "| 503s per replica | answers served |\n| --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
        for r in routed:
            print(f"| {r['fault']} | {r['completed']}/{r['runs']} | {r['calls']} | {r['retries']} "
                  f"| {r['requests_per_replica']} | {r['errors_per_replica']} | {r['answers']} |")  # fmt: skip
            for failure in r["failures"]:
                print(f"failed ({r['fault']}): {failure}")
        print("(a killed replica's counters are those read at the kill; its requests in flight were lost)")  # fmt: skip
    figures: dict[str, Any] = {**results, "router": routed}
    emit(figures, json_file)
    return figures
