"""``concilium bench mcp-start``: how soon ``serve mcp`` over stdio answers an MCP host.

An MCP host starts the server itself and gives the handshake a deadline (the MCP
Inspector: 15 s); the goal here is 2 s. Each row is the median of ``repeats`` fresh
processes, measured side by side in one run:

* ``python``          -- the interpreter alone (``python -c pass``): the floor
* ``mcp SDK import``  -- ``import mcp.server.mcpserver``: what any Python MCP server pays
* ``serve mcp, no client`` -- ``serve mcp`` with stdin closed: everything it does before
  it can answer, then exit (its CPU time is the start-up cost)
* ``handshake``       -- an ``mcp`` SDK client's handshake answered, from the spawn
* ``tools/list``      -- the tool list answered (the workflows built), from the spawn
* ``first call``      -- the first tool call answered (one debate on the simulated
  server), from the spawn

``cpu_s`` is the process's user + system CPU time, where the row ends with the process.
The machine's load average is printed with the figures: on a shared 2-core machine the
wall times grow with it, the CPU times do not.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO, TypedDict

from concilium.bench._report import emit

GOAL_S = 2.0
"""The handshake's goal, well inside the MCP Inspector's 15 s."""
WORKFLOW = Path(__file__).resolve().parent.parent / "examples" / "debate.yaml"
QUESTION = "What is 17 + 25?"


class Row(TypedDict):
    row: str
    wall_s: float
    cpu_s: float | None


def _serve_args(workflow: Path) -> list[str]:
    return ["-P", "-m", "concilium", "serve", "mcp", str(workflow), "--backend", "sim"]


def _process(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``python ARGS`` run to its end with stdin closed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], stdin=subprocess.DEVNULL, capture_output=True, check=True)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


async def _client(workflow: Path, errlog: TextIO) -> tuple[float, float, float]:
    """Seconds from the spawn to the handshake, the tool list and the first call."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=_serve_args(workflow))
    start = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=120) as client:
        handshake = time.perf_counter() - start
        await client.list_tools()
        listed = time.perf_counter() - start
        result = await client.call_tool(workflow.stem, {"question": QUESTION})
        called = time.perf_counter() - start
    if result.is_error:
        raise RuntimeError(f"the {workflow.stem} tool failed: {result.content}")
    return handshake, listed, called


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def measure(repeats: int = 3, workflow: Path = WORKFLOW) -> dict[str, Any]:
    """The figures: one row per measurement, the median of ``repeats`` processes."""
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    commands = {
        "python": ["-c", "pass"],
        "mcp SDK import": ["-c", "import mcp.server.mcpserver"],
        "serve mcp, no client": _serve_args(workflow),
    }
    for _ in range(repeats):  # interleaved, so a burst of load hits every row alike
        for name, args in commands.items():
            wall, cpu = _process(args)
            walls.setdefault(name, []).append(wall)
            cpus.setdefault(name, []).append(cpu)
        with open(os.devnull, "w") as quiet:  # the server's notices on stderr
            milestones = asyncio.run(_client(workflow, quiet))
        for name, wall in zip(("handshake", "tools/list", "first call"), milestones, strict=True):
            walls.setdefault(name, []).append(wall)
    rows: list[Row] = [
        {"row": name, "wall_s": _median(w), "cpu_s": _median(cpus[name]) if name in cpus else None}
        for name, w in walls.items()
    ]
    handshake = next(r["wall_s"] for r in rows if r["row"] == "handshake")
    sdk = next(r["wall_s"] for r in rows if r["row"] == "mcp SDK import")
    return {
        "rows": rows,
        "repeats": repeats,
        "goal_s": GOAL_S,
        "handshake_within_goal": handshake <= GOAL_S,
        "handshake_over_sdk_import": round(handshake / sdk, 2) if sdk else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main(repeats: int = 3, json_file: str | None = None) -> None:
    figures = measure(repeats)
    print(f"serve mcp over stdio, {figures['repeats']} fresh processes per row (median)")
    print(f"{'row':<22} {'wall s':>8} {'cpu s':>8}")
    for row in figures["rows"]:
        cpu = "" if row["cpu_s"] is None else f"{row['cpu_s']:.3f}"
        print(f"{row['row']:<22} {row['wall_s']:>8.3f} {cpu:>8}")
    verdict = "within" if figures["handshake_within_goal"] else "OVER"
    print(
        f"handshake {verdict} the {GOAL_S:g} s goal; {figures['handshake_over_sdk_import']}x the "
        f"SDK's own import; load average {figures['load_average']} on {figures['cpus']} CPUs"
    )
    emit(figures, json_file)
