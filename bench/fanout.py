"""``concilium bench fanout``: what an N-way fan-out of agent calls costs.

The simulated server runs in its own process with a fixed latency; every row of the
table is measured in the same run, against the same server, N = 1 .. 512 (512 is
DeepConf's trace budget):

* floor      -- ``asyncio.gather`` of raw aiohttp posts on one session
* concilium  -- ``asyncio.gather`` of ``Agent.run`` (ledger, pool, spans, record)
* graph      -- concilium's self-consistency graph, N branches as LangGraph ``Send`` tasks
* litellm    -- ``asyncio.gather`` over ``litellm.acompletion``
* langgraph  -- a hand-written LangGraph ``Send`` graph whose nodes call litellm
* loop       -- the reference repos' sequential loop over litellm (N <= 64)

Each width is measured ``repeats`` times, the contenders taking turns (the median
is reported), so a change in the machine's load reaches them all alike.

``ratio`` is concilium's wall time over one call's; ``vs_floor`` over the floor's.
The deployment takes a whole fan-out at once (``max_concurrency`` above the widest N,
as the floor does; at concilium's default of 256 per replica a 512-way fan-out goes
in two waves). The objects made by importing the contenders (litellm, LangGraph) are
frozen out of the garbage collector after the warm-up, for every contender alike: a
full collection of that heap took 50-250 ms on this machine, at random points of
random rows, a cost of the bench's imports rather than of any contender.

A second part measures per-call client cost on a zero-latency server: N sequential
calls of each contender, interleaved in rounds; wall time and this process's CPU
time per call (the server runs in its own process, so CPU time is the client's).
"""

from __future__ import annotations

import asyncio
import gc
import json
import operator
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypedDict

import aiohttp

from concilium.agents import Agent, Capabilities, ModelSpec, aclose
from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
from concilium.agents.sim import Latency, SimConfig
from concilium.bench._report import emit
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.serving import SimServer

MESSAGES = [{"role": "user", "content": "What is 12 * 7? Answer with a number."}]
LOOP_MAX = 64
DEFAULT_SIZES = (1, 4, 16, 64, 256, 512)
MAX_WIDTH = 1024  # requests in flight the bench's deployment takes (ModelSpec.max_concurrency)


async def _median(repeats: int, fn: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Contenders:
    """The ways of making N calls, each as ``async fn(n)``."""

    def __init__(self, url: str, model: str):
        self.url = url
        self.model = model
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        spec = ModelSpec(
            f"hosted_vllm/{model}",
            api_base=url,
            capabilities=Capabilities(n=False),
            max_concurrency=MAX_WIDTH,
        )
        self.agent = Agent("bench", spec, max_tokens=16)
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        self.litellm = litellm
        self._graphs: dict[int, Any] = {}
        self._calls = 0

    async def close(self) -> None:
        await self.session.close()
        await aclose()

    async def floor(self, n: int) -> None:
        body = json.dumps({"model": self.model, "messages": MESSAGES, "max_tokens": 16})

        async def one() -> Any:
            async with self.session.post(
                f"{self.url}/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                return json.loads(await resp.read())

        await asyncio.gather(*(one() for _ in range(n)))

    async def concilium(self, n: int) -> None:
        token = use_ledger(CallLedger())
        try:
            await asyncio.gather(*(self.agent.run(MESSAGES, key=f"b{i}") for i in range(n)))
        finally:
            reset_ledger(token)

    async def concilium_in_run(self, n: int) -> None:
        """``concilium`` inside a run already in progress: its ledger is set, so the
        calls are counted and recorded there (each under a key of its own)."""
        self._calls += 1
        keys = (f"r{self._calls}.{i}" for i in range(n))
        await asyncio.gather(*(self.agent.run(MESSAGES, key=key) for key in keys))

    async def graph(self, n: int) -> None:
        graph = self._graphs.get(n)
        if graph is None:
            graph = self._graphs[n] = self_consistency(self.agent, samples=n)
        await run(graph, MESSAGES[0]["content"])

    async def _litellm_call(self) -> Any:
        return await self.litellm.acompletion(
            model=f"hosted_vllm/{self.model}", api_base=self.url, messages=MESSAGES, max_tokens=16
        )

    async def litellm_gather(self, n: int) -> None:
        await asyncio.gather(*(self._litellm_call() for _ in range(n)))

    async def langgraph(self, n: int) -> None:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send

        class S(TypedDict, total=False):
            n: int
            out: Annotated[list[Any], operator.add]

        async def call(_: Any) -> dict[str, Any]:
            return {"out": [await self._litellm_call()]}

        g = StateGraph(S)
        g.add_node("call", call)  # pyright: ignore[reportArgumentType]  # LangGraph types node input loosely
        g.add_conditional_edges(
            START, lambda s: [Send("call", {}) for _ in range(s["n"])], ["call"]
        )
        g.add_edge("call", END)
        await g.compile().ainvoke({"n": n})

    async def loop(self, n: int) -> None:
        for _ in range(n):
            await self._litellm_call()


async def measure(sizes: list[int], latency: float, repeats: int) -> dict[str, Any]:
    rows = []
    async with SimServer(SimConfig(latency=Latency(fixed=latency)), process=True) as sim:
        c = Contenders(sim.url, sim.config.model)
        try:
            for fn in (c.floor, c.concilium, c.graph, c.litellm_gather, c.langgraph):
                await fn(4)  # warm up connections and imports
            _freeze_heap()
            one = await _median(repeats, lambda: c.concilium(1))
            contenders = {
                "floor_s": c.floor,
                "concilium_s": c.concilium,
                "graph_s": c.graph,
                "litellm_s": c.litellm_gather,
                "langgraph_s": c.langgraph,
            }
            for n in sizes:
                row: dict[str, Any] = {"n": n}
                times: dict[str, list[float]] = {name: [] for name in contenders}
                for _ in range(repeats):  # interleaved: load drift reaches every contender alike
                    for name, fn in contenders.items():
                        times[name].append(await _median(1, lambda fn=fn, n=n: fn(n)))
                for name, got in times.items():
                    row[name] = round(statistics.median(got), 4)
                row["loop_s"] = (
                    round(await _median(1, lambda n=n: c.loop(n)), 4) if n <= LOOP_MAX else None
                )
                row["ratio"] = round(row["concilium_s"] / one, 3)
                row["vs_floor"] = round(row["concilium_s"] / row["floor_s"], 3)
                row["graph_vs_floor"] = round(row["graph_s"] / row["floor_s"], 3)
                row["litellm_vs_floor"] = round(row["litellm_s"] / row["floor_s"], 3)
                rows.append(row)
                print(f"  measured n={n}", file=sys.stderr, flush=True)
        finally:
            await c.close()
    overhead = await per_call_overhead(calls=2000)
    return {"latency_s": latency, "one_call_s": round(one, 4), "rows": rows, "per_call": overhead}


def _freeze_heap() -> None:
    """Move every object alive now (the contenders' imports) out of the collector's
    sight, so a full collection during a timed row walks only what the calls made."""
    gc.collect()
    gc.freeze()


async def per_call_overhead(calls: int, rounds: int = 10) -> dict[str, Any]:
    """Sequential calls against a zero-latency server: wall and client CPU per call.

    The contenders take turns, ``calls / rounds`` calls each per round, so drift in
    the machine's load reaches all of them alike. litellm makes a tenth as many calls
    (it is ~10x slower per call, and its figure is only for scale). concilium's calls
    are the calls of one run: they share its ledger, as the floor's share a session
    (a ledger per call, as the fan-out rows have one per fan-out, measured ~7% more
    CPU per call here)."""
    share = {"floor": 1.0, "concilium": 1.0, "litellm": 0.1}
    async with SimServer(SimConfig(latency=Latency(fixed=0.0)), process=True) as sim:
        c = Contenders(sim.url, sim.config.model)
        token = use_ledger(CallLedger())
        try:
            fns = {"floor": c.floor, "concilium": c.concilium_in_run, "litellm": c.litellm_gather}
            for fn in fns.values():
                for _ in range(20):
                    await fn(1)
            _freeze_heap()
            wall = dict.fromkeys(fns, 0.0)
            cpu = dict.fromkeys(fns, 0.0)
            made = dict.fromkeys(fns, 0)
            for _ in range(rounds):
                for name, fn in fns.items():
                    n = max(1, int(calls / rounds * share[name]))
                    started, cpu_started = time.perf_counter(), time.process_time()
                    for _ in range(n):
                        await fn(1)
                    wall[name] += time.perf_counter() - started
                    cpu[name] += time.process_time() - cpu_started
                    made[name] += n
        finally:
            reset_ledger(token)
            await c.close()
    out: dict[str, Any] = {}
    for name in fns:
        out[f"{name}_ms"] = round(wall[name] / made[name] * 1000, 3)
        out[f"{name}_cpu_ms"] = round(cpu[name] / made[name] * 1000, 3)
    out["concilium_vs_floor"] = round(out["concilium_ms"] / out["floor_ms"], 3)
    out["concilium_vs_litellm"] = round(out["concilium_ms"] / out["litellm_ms"], 3)
    out["concilium_cpu_vs_floor"] = round(out["concilium_cpu_ms"] / out["floor_cpu_ms"], 3)
    return out


def table(result: dict[str, Any]) -> str:
    head = [
        "n",
        "floor_s",
        "concilium_s",
        "graph_s",
        "litellm_s",
        "langgraph_s",
        "loop_s",
        "ratio",
        "vs_floor",
    ]
    lines = ["  ".join(f"{h:>11}" for h in head)]
    for row in result["rows"]:
        cells = [row[h] if row[h] is not None else "-" for h in head]
        lines.append("  ".join(f"{c:>11}" for c in cells))
    pc = result["per_call"]
    lines.append(
        f"per call, zero-latency server: floor {pc['floor_ms']} ms, concilium {pc['concilium_ms']} ms, "
        f"litellm {pc['litellm_ms']} ms (concilium/floor {pc['concilium_vs_floor']}, "
        f"concilium/litellm {pc['concilium_vs_litellm']})"
    )
    lines.append(
        f"client CPU per call: floor {pc['floor_cpu_ms']} ms, concilium {pc['concilium_cpu_ms']} ms, "
        f"litellm {pc['litellm_cpu_ms']} ms (concilium/floor {pc['concilium_cpu_vs_floor']})"
    )
    return "\n".join(lines)


def main(
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    latency: float = 0.2,
    repeats: int = 3,
    json_file: str | None = None,
) -> dict[str, Any]:
    try:
        result = asyncio.run(measure(list(sizes), latency, repeats))
    finally:
        gc.unfreeze()
    print(
        f"fan-out of agent calls, simulated server in its own process, {latency * 1000:.0f} ms per call"
    )
    print(table(result))
    emit(result, json_file)
    return result


if __name__ == "__main__":
    main()
