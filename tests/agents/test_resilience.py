"""Sick replicas, timeouts, Retry-After and the last error, over real HTTP to
simulated servers (test doubles) that inject the faults."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from concilium import ModelCallError, RunError, WorkflowError
from concilium.agents import Agent, Budget, Capabilities, ModelSpec
from concilium.agents._ledger import RetryPolicy
from concilium.agents._model import pool_for
from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
from concilium.agents.sim import Faults, Latency, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import self_consistency
from concilium.graphs.workflows import load_workflow
from concilium.serving import SimServer

ROOT = Path(__file__).resolve().parents[2]
SICK = {"503": Faults(error_rate=1.0), "hang": Faults(hang_rate=1.0)}


@contextlib.asynccontextmanager
async def sick_and_healthy(sickness: str) -> AsyncIterator[tuple[SimServer, SimServer]]:
    sick = SimConfig(seed=1, latency=Latency(fixed=0.05), faults=SICK[sickness])
    healthy = SimConfig(seed=2, latency=Latency(fixed=0.05))
    async with SimServer(sick) as a, SimServer(healthy) as b:
        yield a, b


def pool_spec(servers: tuple[SimServer, ...], **options: object) -> ModelSpec:
    return ModelSpec("hosted_vllm/concilium-sim", api_base=[s.url for s in servers],
                     capabilities=Capabilities(n=False), timeout=1.5, **options)  # type: ignore[arg-type]  # fmt: skip


async def set_faults(server: SimServer, faults: Faults) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(server.base + "/sim/faults", json=faults.model_dump()) as resp:
            resp.raise_for_status()


async def until_true(condition: object, what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {within_s} s waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("sickness", ["503", "hang"])
@pytest.mark.parametrize("routing", ["least_loaded", "affinity", "round_robin"])
async def test_a_sick_replica_is_routed_around_under_every_routing_mode(
    routing: str, sickness: str
) -> None:
    async with sick_and_healthy(sickness) as (sick, healthy):
        spec = pool_spec((sick, healthy), routing=routing)
        pool = pool_for(spec)
        pool.breaker_cooldown = 600.0  # no half-open probe during this test
        results, sick_requests = [], []
        for i in range(4):  # affinity sends a question's fan-out to its home replica
            question = f"What is {i} + 5?"
            results.append(await run(self_consistency(Agent("s", spec), samples=16), question))
            sick_requests.append((await sick.stats())["requests"])
        healthy_stats = await healthy.stats()
    for result in results:  # every run completes, every branch answered once
        assert result.calls == 16 and sorted(e["sample"] for e in result.transcript) == list(
            range(16)
        )
    assert healthy_stats["completed"] == 64
    now = time.monotonic()
    assert pool.replicas[1].breaker(pool.breaker_failures, now) == "closed"
    if routing != "affinity":  # affinity may have homed every question on the healthy one
        assert sick_requests[-1] > 0
    if sick_requests[-1]:  # it was tried: its breaker opened within one fan-out, and held
        first = next(n for n in sick_requests if n)
        assert first <= 16 and sick_requests[-1] == first
        assert pool.replicas[0].breaker(pool.breaker_failures, now) == "open"


async def test_the_half_open_probe_closes_the_breaker_once_the_replica_recovers() -> None:
    async with sick_and_healthy("503") as (sick, healthy):
        spec = pool_spec((sick, healthy))
        pool = pool_for(spec)
        pool.breaker_cooldown = 0.3
        replica = pool.replicas[0]
        await run(self_consistency(Agent("s", spec), samples=16), "What is 1 + 1?")
        assert replica.breaker(pool.breaker_failures, time.monotonic()) == "open"
        await set_faults(sick, Faults())  # it recovers
        await until_true(lambda: replica.breaker(pool.breaker_failures, time.monotonic()) == "half_open",
                         "the cool-down to end")  # fmt: skip
        before = (await sick.stats())["completed"]
        result = await run(self_consistency(Agent("s", spec), samples=16), "What is 2 + 2?")
        after = (await sick.stats())["completed"]
    assert result.calls == 16
    assert replica.breaker(pool.breaker_failures, time.monotonic()) == "closed"
    assert replica.failures == 0 and after > before  # it serves again


async def test_a_failed_probe_opens_the_breaker_again_for_longer() -> None:
    async with sick_and_healthy("503") as (sick, healthy):
        spec = pool_spec((sick, healthy))
        pool = pool_for(spec)
        pool.breaker_cooldown = 0.2
        replica = pool.replicas[0]
        await run(self_consistency(Agent("s", spec), samples=8), "What is 1 + 1?")
        await until_true(lambda: replica.breaker(pool.breaker_failures, time.monotonic()) == "half_open",
                         "the cool-down to end")  # fmt: skip
        before = (await sick.stats())["requests"]
        result = await run(self_consistency(Agent("s", spec), samples=8), "What is 2 + 2?")
        probes = (await sick.stats())["requests"] - before
    assert result.calls == 8
    assert probes == 1  # one probe, not the fan-out
    assert replica.reopened == 1
    assert replica.breaker(pool.breaker_failures, time.monotonic()) == "open"


async def test_a_retry_prefers_a_replica_the_call_has_not_tried() -> None:
    flaky = SimConfig(seed=1, latency=Latency(fixed=0.01), faults=Faults(first_errors=1))
    async with SimServer(flaky) as first, SimServer(SimConfig(seed=2)) as second:
        agent = Agent("a", pool_spec((first, second)))
        await agent.run("hi")
        counts = [(await s.stats())["requests"] for s in (first, second)]
    assert counts == [1, 1]  # the retry went to the other replica, not back to the first


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(status: int) -> None:
    faults = Faults(first_errors=1, error_status=status, retry_after=2)
    async with SimServer(SimConfig(latency=Latency(fixed=0.01), faults=faults)) as sim:
        reply = await Agent("a", sim.spec()).run("hi")
        log = await sim.requests()
    assert reply.text and len(log) == 2
    # the server asked for 2 s; the backoff alone would have waited under 0.25 s
    assert log[1]["t"] - log[0]["t"] >= 1.5


async def test_the_last_error_says_it_gave_up_after_all_attempts() -> None:
    async with SimServer(
        SimConfig(latency=Latency(fixed=0.01), faults=Faults(error_rate=1.0))
    ) as sim:
        token = use_ledger(CallLedger(retry=RetryPolicy(attempts=3, initial_wait=0.01)))
        try:
            with pytest.raises(ModelCallError) as info:
                await Agent("a", sim.spec()).run("hi")
        finally:
            reset_ledger(token)
        stats = await sim.stats()
    message = str(info.value)
    assert "gave up after 3 attempts" in message and "503" in message
    assert "retrying" not in message
    assert stats["requests"] == 3


async def test_a_hung_stream_fails_at_the_first_byte_timeout_not_the_total() -> None:
    async with SimServer(SimConfig(faults=Faults(hang_rate=1.0))) as sim:
        token = use_ledger(CallLedger(retry=RetryPolicy(attempts=2)))
        started = time.monotonic()
        spec = sim.spec(ttft_timeout=0.3, timeout=600)
        try:
            with pytest.raises(ModelCallError) as info:
                await Agent("a", spec).run("hi", on_text=lambda _: None)
        finally:
            reset_ledger(token)
    assert "ttft_timeout" in str(info.value) and "gave up after 2 attempts" in str(info.value)
    assert time.monotonic() - started < 60  # not the 600 s total


async def test_a_run_past_its_deadline_fails_naming_the_deadline() -> None:
    async with SimServer(SimConfig(faults=Faults(hang_rate=1.0))) as sim:
        graph = self_consistency(
            Agent("s", sim.spec(capabilities=Capabilities(n=False))), samples=4
        )
        with pytest.raises(RunError, match=r"deadline of 0\.5 s"):
            await run(graph, "What is 2 + 2?", deadline_s=0.5)
        stats = await sim.stats()
    assert stats["requests"] == 4  # sent once each, then cancelled with the run


def test_timeouts_must_be_finite_and_positive() -> None:
    for bad in (float("inf"), 0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ttft_timeout"):
            ModelSpec("hosted_vllm/m", ttft_timeout=bad)


def test_bench_faults_reports_completion_requests_and_tail() -> None:
    from concilium.bench import faults

    result = faults.main(runs=3, latency=0.02)
    assert set(result) == {"default", "tuned"}  # the default timeouts beside the tuned one
    assert result["default"]["timeout_s"] > result["tuned"]["timeout_s"]
    for figures in result.values():
        assert figures["runs"] == 3 and figures["completed"] == 3, figures["failures"]
        assert figures["requests"] >= figures["calls"] > 0
        assert figures["slowest_run_s"] >= figures["median_run_s"] > 0


def test_cli_run_deadline_stops_a_run_on_a_hung_server_naming_it(tmp_path: Path) -> None:
    text = (ROOT / "examples/self_consistency.yaml").read_text()
    hung = tmp_path / "hung.yaml"
    hung.write_text(text + "  faults: {hang_rate: 1.0}\n")
    out = subprocess.run(
        [sys.executable, "-P", "-m", "concilium", "run", str(hung), "-b", "sim", "-i", "q",
         "--deadline", "1.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "deadline of 1.5 s" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("value", [".inf", "0", "-1", ".nan"])
def test_a_workflow_file_refuses_an_absurd_first_byte_timeout(tmp_path: Path, value: str) -> None:
    text = (ROOT / "examples/self_consistency.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace("    capabilities:", f"    ttft_timeout: {value}\n    capabilities:", 1)
    )
    with pytest.raises(WorkflowError, match="ttft_timeout"):
        load_workflow(bad)


def test_a_workflow_file_sets_the_timeouts_of_its_models(tmp_path: Path) -> None:
    text = (ROOT / "examples/self_consistency.yaml").read_text()
    path = tmp_path / "ok.yaml"
    timeouts = "    ttft_timeout: 2.5\n    connect_timeout: 1\n    capabilities:"
    path.write_text(text.replace("    capabilities:", timeouts, 1))
    spec = load_workflow(path).models["solver"]
    assert (spec.ttft_timeout, spec.connect_timeout, spec.timeout) == (2.5, 1.0, 120.0)


async def test_a_hedged_request_wins_over_a_hung_replica_and_the_hung_one_is_cancelled() -> None:
    async with sick_and_healthy("hang") as (sick, healthy):
        # the hung replica is picked first (equal loads); without the hedge the call
        # would wait out its 30 s first-byte timeout there
        spec = ModelSpec("hosted_vllm/concilium-sim", api_base=[sick.url, healthy.url],
                         capabilities=Capabilities(n=False), hedge_after=0.2)  # fmt: skip
        events: list[dict[str, object]] = []
        ledger = CallLedger(budget=Budget(max_calls=2), on_event=events.append)
        token = use_ledger(ledger)
        try:
            reply = await Agent("a", spec).run("What is 2 + 3?")
        finally:
            reset_ledger(token)
        for _ in range(200):  # the server sees the hung request's connection close
            if (await sick.stats())["cancelled"] == 1:
                break
            await asyncio.sleep(0.02)
        sick_stats, healthy_stats = await sick.stats(), await healthy.stats()
    assert reply.text and sick_stats["requests"] == 1 and healthy_stats["requests"] == 1
    assert sick_stats["cancelled"] == 1  # the loser was cancelled, not left hanging
    hedges = [e for e in events if e["type"] == "call_hedged"]
    assert hedges == [
        {"type": "call_hedged", "agent": "a", "after_s": 0.2, "from": sick.url, "to": healthy.url}
    ]
    # both copies were sent, so both count against the budget; nothing stays reserved
    assert (ledger.calls, ledger.attempts) == (1, 2)
    assert (ledger.meter.used_calls, ledger.meter.reserved_calls) == (2, 0)


async def test_no_hedge_without_budget_for_the_copy() -> None:
    async with sick_and_healthy("hang") as (sick, healthy):
        spec = ModelSpec("hosted_vllm/concilium-sim", api_base=[sick.url, healthy.url],
                         capabilities=Capabilities(n=False), timeout=0.5, hedge_after=0.1)  # fmt: skip
        events: list[dict[str, object]] = []
        ledger = CallLedger(budget=Budget(max_calls=1), on_event=events.append)
        token = use_ledger(ledger)
        try:  # the copy does not fit: the request times out alone, and its retry fails over
            reply = await Agent("a", spec).run("What is 2 + 3?")
        finally:
            reset_ledger(token)
        counts = [(await s.stats())["requests"] for s in (sick, healthy)]
    assert reply.text and counts == [1, 1]
    assert [e["type"] for e in events if e["type"] in ("call_hedged", "call_failover")] == [
        "call_failover"
    ]
    assert (ledger.meter.used_calls, ledger.meter.reserved_calls) == (1, 0)


def test_a_workflow_file_sets_hedging_off_by_default(tmp_path: Path) -> None:
    text = (ROOT / "examples/self_consistency.yaml").read_text()
    assert (
        load_workflow(ROOT / "examples/self_consistency.yaml").models["solver"].hedge_after is None
    )
    path = tmp_path / "ok.yaml"
    path.write_text(text.replace("    capabilities:", "    hedge_after: 1.5\n    capabilities:", 1))
    assert load_workflow(path).models["solver"].hedge_after == 1.5
    path.write_text(text.replace("    capabilities:", "    hedge_after: 0\n    capabilities:", 1))
    with pytest.raises(WorkflowError, match="hedge_after"):
        load_workflow(path)


def test_a_workflow_file_sets_the_reply_size_cap_of_its_models(tmp_path: Path) -> None:
    text = (ROOT / "examples/self_consistency.yaml").read_text()
    default = load_workflow(ROOT / "examples/self_consistency.yaml").models["solver"]
    assert default.max_response_bytes == 16 * 2**20
    path = tmp_path / "ok.yaml"
    cap = "    max_response_bytes: 65536\n    capabilities:"
    path.write_text(text.replace("    capabilities:", cap, 1))
    assert load_workflow(path).models["solver"].max_response_bytes == 65536
    path.write_text(
        text.replace("    capabilities:", "    max_response_bytes: 10\n    capabilities:", 1)
    )
    with pytest.raises(WorkflowError, match="max_response_bytes"):
        load_workflow(path)


async def test_a_slow_whole_reply_is_not_cut_by_the_first_byte_timeout() -> None:
    # a non-streamed reply's first byte is its last: only timeout bounds it
    async with SimServer(SimConfig(latency=Latency(fixed=1.0))) as sim:
        token = use_ledger(CallLedger(retry=RetryPolicy(attempts=1)))
        try:
            reply = await Agent("a", sim.spec(ttft_timeout=0.2, timeout=30)).run("hi")
            with pytest.raises(ModelCallError, match=r"within 0.3 s \(timeout\)"):
                await Agent("b", sim.spec(ttft_timeout=30, timeout=0.3)).run("hi")
        finally:
            reset_ledger(token)
    assert reply.text
