"""vLLM's own router (``vllm-router``) in front of local replicas.

``concilium serve local --replicas N`` and ``concilium serve vllm`` start one router
per model with more than one replica, so every client (an eval, a served API, a
second machine) sends to one URL and the router decides where each request goes:
``cache_aware`` by default (the replica whose past prompts share the longest prefix
with this one), or ``consistent_hash``, ``power_of_two``, ``round_robin``. It is a
pinned optional dependency (``pip install 'concilium[router]'``), a prebuilt Rust
binary.

The router is health-polled, restarted when it dies and stopped on exit like a
replica (``Supervisor``). It is started with ``--disable-retries``: concilium's
``RetryPolicy`` is the one layer that retries a failed call (each retry goes back
through the router, whose health checks and circuit breaker steer it away from a
failing replica), so one call never sends more than ``RetryPolicy.attempts``
requests to the replicas (docs/serving.md, "Routers").

concilium tells the router which calls belong together in the ``X-Session-ID``
header (``SESSION_HEADER``), the header ``consistent_hash`` reads: every call of a
fan-out that shares its first message carries the same key.

Example:
    >>> router_command("vllm-router", ["http://127.0.0.1:8001/v1"], 9000, 9001)[1:7]
    ['--host', '127.0.0.1', '--port', '9000', '--worker-urls', 'http://127.0.0.1:8001']
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from concilium._errors import UserError

from ._engine import free_port
from ._process import ManagedProcess
from ._supervisor import MAX_RESTARTS, Log, Supervisor

POLICIES = ("cache_aware", "consistent_hash", "power_of_two", "round_robin")
# What a vLLM replica behind the router is started with: cache_aware asks a replica's
# /v1/chat/completions/render for a prompt's token IDs, which vLLM (0.32) serves only
# with --enable-scale-out; without it the replica answers 403, the router counts
# "missing_tokens" and routes without the prefix (measured: a fan-out spread like
# round_robin). The embedded engine's pinned vLLM has the flag.
ROUTED_REPLICA_ARGS = ("--enable-scale-out",)
DEFAULT_POLICY = "cache_aware"
SESSION_HEADER = "X-Session-ID"  # what vllm-router's consistent_hash hashes on


def router_binary() -> str:
    """The ``vllm-router`` beside this Python, or on PATH; a UserError naming the fix."""
    beside = Path(sys.executable).parent / "vllm-router"
    found = str(beside) if beside.exists() else shutil.which("vllm-router")
    if not found:
        raise UserError(
            "vllm-router is not installed: pip install 'concilium[router]' "
            "(vllm-router 0.1.17), or pass --no-router to route on the client"
        )
    return found


def router_command(
    binary: str, workers: Sequence[str], port: int, metrics_port: int, policy: str = DEFAULT_POLICY
) -> list[str]:
    """The exact ``vllm-router`` command in front of ``workers`` (``.../v1`` URLs)."""
    if policy not in POLICIES:
        raise UserError(f"router policy {policy!r} is not one of {', '.join(POLICIES)}")
    return [
        binary,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--worker-urls", *(w.removesuffix("/v1") for w in workers),
        "--policy", policy,
        "--prometheus-host", "127.0.0.1",
        "--prometheus-port", str(metrics_port),
        # concilium retries a call; the router only routes it (no multiplied retries)
        "--disable-retries",
        # a replica answering 5xx to everything (its /health up) is out of rotation after
        # 3 failures, fewer than RetryPolicy's 4 attempts: with the default (10) a call's
        # every attempt could land on it (its queue is always the shortest), and 1 run
        # in 4 failed so in bench faults' drill
        "--cb-failure-threshold", "3",
        # a dead replica is out of rotation within seconds, not the default minute
        "--health-check-interval-secs", "1",
        "--health-failure-threshold", "1",
        "--health-check-timeout-secs", "2",
        "--log-level", "warning",
    ]  # fmt: skip


@dataclass
class Router:
    """A running router: its one URL for clients and its Prometheus metrics URL."""

    url: str
    metrics_url: str
    policy: str
    supervisor: Supervisor

    @property
    def process(self) -> ManagedProcess:
        return self.supervisor.processes[0]


@contextlib.asynccontextmanager
async def run_router(
    workers: Sequence[str],
    *,
    name: str = "vllm-router",
    policy: str = DEFAULT_POLICY,
    port: int = 0,
    deadline: float = 60.0,
    max_restarts: int = MAX_RESTARTS,
    log: Log | None = None,
    notice: Log | None = None,
) -> AsyncIterator[Router]:
    """Start ``vllm-router`` in front of ``workers`` (already answering ``/health``),
    wait until it answers ``/health``, restart it if it dies, stop it on exit."""
    binary = router_binary()
    port = port or free_port()
    metrics_port = free_port()
    argv = router_command(binary, workers, port, metrics_port, policy)
    label = f"{name} (port {port}, policy {policy}, {len(workers)} replicas)"

    def process(_: int = 0) -> ManagedProcess:
        return ManagedProcess(
            label, argv, health_url=f"http://127.0.0.1:{port}/health", deadline=deadline
        )

    if log:
        log(f"starting {label}: {' '.join(argv)}")
    first = await process().start()
    url = f"http://127.0.0.1:{port}/v1"
    supervisor = Supervisor([first], process, [url], max_restarts=max_restarts, notice=notice)
    try:
        async with supervisor:
            yield Router(url, f"http://127.0.0.1:{metrics_port}/metrics", policy, supervisor)
    finally:
        await supervisor.processes[0].stop()
