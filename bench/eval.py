"""``concilium bench eval``: how busy ``concilium eval`` keeps a server.

The simulated server (a test double) runs in its own process and decodes at most
``max_running`` requests at once, ``latency`` seconds each (the rest wait, as in a
batching server's scheduler), so it serves at most ``max_running / latency`` requests
per second. The same eval (generated sums, self-consistency of 4 samples per item, each
sample its own request) runs three ways in one run, against the same server:

* runner     -- ``concilium eval``'s runner with its default bound on items in flight
* sequential -- the reference repositories' loop: one item after another
* all_at_once -- every item launched at once (the runner with no bound)

and, when Ray is installed, a fourth beside the runner (``figures["ray"]``):

* ray_pool   -- ``concilium eval --ray``: the same bound on items in flight split over
  a pool of Ray workers on a local Ray instance (``RAY_WORKERS`` CPUs); its wall time
  counts starting the workers (each builds the methods and a session), not the
  instance

``utilisation`` is items per second over the server's capacity in items per second
(capacity in requests per second divided by the requests each item sent).
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from concilium.agents.sim import Latency, SimConfig
from concilium.app import Backend
from concilium.bench._report import emit
from concilium.evals import EvalRecord, ItemResult, build_methods, evaluate, evaluate_on_ray
from concilium.serving import SimServer

DEFAULT_CONCURRENCY: int = inspect.signature(evaluate).parameters["concurrency"].default
"""The runner's own default bound on items in flight (what ``concilium eval`` uses)."""
SEQUENTIAL_MAX = 12
"""The sequential loop runs at most this many items (it would take items x latency)."""
RAY_WORKERS = 2
"""CPUs of the local Ray instance, one worker each."""

_WORKFLOW = """\
name: single
models:
  m: {model: hosted_vllm/concilium-sim, api_base: "http://127.0.0.1:9/v1", capabilities: {n: false}}
agents:
  solver: {model: m, temperature: 0.8, max_tokens: 16}
workflow: {kind: self_consistency, agent: solver, samples: 4}
"""


class ModeRow(TypedDict):
    mode: str
    concurrency: int
    items: int
    requests: int
    wall_s: float
    items_per_s: float
    utilisation: float
    max_in_flight: int
    failed: int
    errors: list[str]


def _records(n: int) -> list[EvalRecord]:
    return [
        EvalRecord(id=f"sum-{i:04d}", question=f"What is {i % 37} + {i % 11}?", answer=str(i % 37 + i % 11))
        for i in range(n)
    ]  # fmt: skip


async def _mode(
    name: str, concurrency: int, items: int, server: SimServer, workflow: Path, capacity: float
) -> ModeRow:
    methods = build_methods([workflow])
    backend = Backend.parse(server.url)
    await server.reset()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        rows = await evaluate(
            _records(items), methods, backend, out, concurrency=concurrency, progress=False
        )
        wall = time.perf_counter() - started
    return _row(name, concurrency, rows, wall, await server.stats(), capacity)


async def _ray_mode(
    items: int, server: SimServer, workflow: Path, capacity: float
) -> ModeRow | None:
    """The runner's bound split over a pool of Ray workers; ``None`` without Ray."""
    try:
        import ray
    except ImportError:
        return None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=RAY_WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        await server.reset()
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            rows = await asyncio.to_thread(
                evaluate_on_ray, _records(items), [workflow], [], Backend.parse(server.url),
                out, concurrency=DEFAULT_CONCURRENCY, shards=RAY_WORKERS,
            )  # fmt: skip
            wall = time.perf_counter() - started
    finally:
        if started_here:
            ray.shutdown()
    return _row("ray_pool", DEFAULT_CONCURRENCY, rows, wall, await server.stats(), capacity)


def _row(
    name: str,
    concurrency: int,
    rows: list[ItemResult],
    wall: float,
    stats: dict[str, Any],
    capacity: float,
) -> ModeRow:
    items = len(rows)
    errors = sorted({str(r["error"]) for r in rows if r["failed"]})
    requests = int(stats["requests"])
    rate = items / wall
    per_item = requests / items
    return {
        "mode": name,
        "concurrency": concurrency,
        "items": items,
        "requests": requests,
        "wall_s": round(wall, 3),
        "items_per_s": round(rate, 1),
        "utilisation": round(rate * per_item / capacity, 3),
        "max_in_flight": int(stats["max_in_flight"]),
        "failed": sum(r["failed"] for r in rows),
        "errors": errors,
    }


async def measure(items: int, max_running: int, latency: float) -> dict[str, Any]:
    capacity = max_running / latency
    config = SimConfig(latency=Latency(fixed=latency), max_running=max_running)
    async with SimServer(config, process=True) as server:
        with tempfile.TemporaryDirectory() as folder:
            workflow = Path(folder) / "single.yaml"
            workflow.write_text(_WORKFLOW, encoding="utf-8")
            await _mode("warm-up", 4, 8, server, workflow, capacity)
            rows = [
                await _mode("runner", DEFAULT_CONCURRENCY, items, server, workflow, capacity),
                await _mode(
                    "sequential", 1, min(items, SEQUENTIAL_MAX), server, workflow, capacity
                ),
                await _mode("all_at_once", items, items, server, workflow, capacity),
            ]
            pooled = await _ray_mode(items, server, workflow, capacity)
    return {
        "items": items,
        "max_running": max_running,
        "latency_s": latency,
        "capacity_requests_per_s": round(capacity, 1),
        "default_concurrency": DEFAULT_CONCURRENCY,
        "modes": rows,
        "ray": pooled,
    }


def main(
    *, items: int = 200, max_running: int = 16, latency: float = 0.5, json_file: str | None = None
) -> dict[str, Any]:
    figures = asyncio.run(measure(items, max_running, latency))
    print(
        f"{items} items (sequential: first {min(items, SEQUENTIAL_MAX)}), simulated server: "
        f"{max_running} running at once, {latency * 1000:.0f} ms each = "
        f"{figures['capacity_requests_per_s']} requests/s"
    )
    print(
        "| mode | items in flight | items/s | requests/item | server utilisation | max in flight | failed |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    shown = list(figures["modes"])
    if figures["ray"] is not None:
        shown.insert(1, figures["ray"])  # beside the runner it splits over workers
    for r in shown:
        print(
            f"| {r['mode']} | {r['concurrency']} | {r['items_per_s']} | "
            f"{r['requests'] / r['items']:.2f} | {r['utilisation']:.2f} | {r['max_in_flight']} | {r['failed']} |"
        )
    if figures["ray"] is None:
        print("(no ray_pool row: Ray is not installed; pip install 'concilium[ray]')")
    emit(figures, json_file)
    return figures
