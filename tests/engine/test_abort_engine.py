"""Aborted requests leave the real engine at once, and their tokens are counted right
(issue 24: DeepConf online cuts traces while they stream and must free the engine).

On vLLM's CPU build serving Gemma 3 270M base (the session's ``engine`` fixture):

* several long generations (2048 tokens asked, EOS ignored) stream with their
  logprobs; once the engine runs all of them, each is aborted through concilium's own
  path, the one ``deepconf_online`` uses (its ``on_token`` callback returns ``True``,
  the transport closes the connection), and vLLM's ``/metrics`` gauges
  ``vllm:num_requests_running`` and ``..._waiting`` must fall to 0 within 1 s;
  the usage recorded for each aborted trace must equal the tokens its stream
  delivered, counted here one by one, and the engine's own generation counter shows
  what the aborts saved.
* the same through ``concilium serve api`` in front of the engine: a client that
  disconnects mid-stream cancels the run, and the engine's running count falls to 0
  within 1 s.

The 1 s bound is the issue's own ("leave the engine within 1 s"), its acceptance
criterion, not a performance goal of this test; it is measured from the abort itself
(the last stream closed, or the client gone). Slack, said here: vLLM drops an aborted
request between decoding steps, so on a machine so loaded that a step takes longer
than a third of a second the bound is three of the engine's steps as measured just
before the aborts (``STEPS_SLACK``). The times are printed so a reader sees the margin
(here, at a load average of 11-17 on 2 cores: 0.41-0.66 s after the last abort, and
0.23-0.24 s after the client left serve api). Nothing else is timed.

Cost: both tests reuse the session's engine: 8.7 s and 4.1 s on that loaded machine
(most of it waiting for four streams to start, and for serve api to start).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from concilium.agents import Agent, TokenLogprob
from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
from concilium.serving import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
TRACES = 4  # long generations in flight at once
MAX_TOKENS = 2048
BEFORE_ABORT = 8  # tokens every trace has delivered before the aborts
ISSUE_BOUND_S = 1.0  # "aborted requests leave vLLM within 1 s" (issue 24)
# vLLM drops an aborted request between decoding steps and updates its gauges after
# the next one; on a 2-core machine loaded by other work one step can take a second
# or more (measured here at load 17: 0.5-1 s), so the bound stretches to this many
# steps of the engine as measured just before the aborts, never below the issue's 1 s
STEPS_SLACK = 3
_GAUGE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? (\S+)$", re.M)


async def _metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """vLLM's Prometheus metrics, each name summed over its labels."""
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for name, value in _GAUGE.findall(text):
        out[name] = out.get(name, 0.0) + float(value)
    return out


def _busy(m: dict[str, float]) -> float:
    return m["vllm:num_requests_running"] + m["vllm:num_requests_waiting"]


async def _until(check: Any, what: str, deadline: float = 300.0) -> None:
    """Poll ``check`` (an async predicate) until true; fail naming ``what`` after
    ``deadline`` seconds (a loaded machine can take long to start streaming)."""
    end = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {deadline} s: {what}")
        await asyncio.sleep(0.02)


async def _seconds_until_idle(session: aiohttp.ClientSession, base: str, since: float) -> float:
    """Seconds from ``since`` until the engine has no request running or waiting."""

    async def idle() -> bool:
        return _busy(await _metrics(session, base)) == 0

    await _until(idle, "the engine idle after the aborts", deadline=60)
    return time.monotonic() - since


async def _step_seconds(delivered: list[int], tokens: int = 4) -> float:
    """The engine's time per decoding step now: seconds for every stream to deliver
    ``tokens`` more (each step gives every running request one token)."""
    start, began = min(delivered), time.monotonic()

    async def stepped() -> bool:
        return min(delivered) >= start + tokens

    await _until(stepped, f"{tokens} more tokens on every stream")
    return (time.monotonic() - began) / tokens


async def test_aborted_streams_leave_the_engine_within_a_second_and_are_counted(engine) -> None:
    base = engine.urls[0].removesuffix("/v1")
    # ignore_eos: the base model may end a story early; these must run until aborted
    agent = Agent(
        "long", engine.spec(timeout=600), temperature=1.0, max_tokens=MAX_TOKENS,
        logprobs=True, top_logprobs=1, params={"ignore_eos": True},
    )  # fmt: skip
    delivered = [0] * TRACES  # tokens each stream delivered, counted by hand
    abort = [False]
    closed = [0.0] * TRACES  # when each stream was told to close (the abort)

    def on_token(i: int) -> Any:
        def take(token: TokenLogprob) -> bool:
            delivered[i] += 1
            if abort[0]:
                closed[i] = time.monotonic()
            return abort[0]  # concilium's abort path: True closes the stream

        return take

    ledger = CallLedger()
    token = use_ledger(ledger)
    try:
        async with aiohttp.ClientSession() as session:
            generated_before = (await _metrics(session, base))["vllm:generation_tokens_total"]
            story = "Write a very long story about a lighthouse keeper."
            calls = [
                asyncio.ensure_future(agent.run(story, key=f"long{i}", on_token=on_token(i)))
                for i in range(TRACES)
            ]

            async def all_running() -> bool:
                m = await _metrics(session, base)
                return m["vllm:num_requests_running"] == TRACES and min(delivered) >= BEFORE_ABORT

            await _until(all_running, f"{TRACES} streams running on the engine")
            step = await _step_seconds(delivered)
            abort[0] = True  # each stream closes at its next token
            replies = await asyncio.gather(*calls)
            # from the last abort: on a loaded machine a stream's next token (when it
            # can close) may come late, which is not the engine's doing
            idle_after = await _seconds_until_idle(session, base, max(closed))
            generated = (await _metrics(session, base))["vllm:generation_tokens_total"]
    finally:
        reset_ledger(token)
    engine_generated = generated - generated_before
    print(
        f"\nlast abort -> engine idle: {idle_after:.3f} s (a step took {step:.3f} s); tokens delivered {delivered} "
        f"(sum {sum(delivered)}), engine generated {engine_generated:.0f} of the "
        f"{TRACES * MAX_TOKENS} asked"
    )
    bound = max(ISSUE_BOUND_S, STEPS_SLACK * step)
    assert idle_after < bound, f"the aborted requests left the engine after {idle_after:.2f} s"
    for i, reply in enumerate(replies):
        assert reply.finish_reasons == ("abort",)
        assert reply.logprobs is not None and len(reply.logprobs) == delivered[i]
        # the usage recorded for an aborted trace is what its stream delivered
        assert reply.usage.completion_tokens == delivered[i] < MAX_TOKENS
    assert ledger.usage.completion_tokens == sum(delivered) and ledger.calls == TRACES
    # the engine generated what was delivered and little more: the rest was saved
    assert sum(delivered) <= engine_generated <= sum(delivered) + TRACES * 64
    assert engine_generated < TRACES * MAX_TOKENS / 4


WORKFLOW = """\
name: long_count
description: A greedy count that runs until its 2048 tokens are spent.
models:
  base:
    model: hosted_vllm/gemma-3-270m
    api_base: http://127.0.0.1:8000/v1
    mode: completion
    capabilities: {n: true, logprobs: true}
    timeout: 600
    ttft_timeout: 600
agents:
  counter: {model: base, temperature: 0.0, max_tokens: 2048, stop: ["THE END"], prompt: "{{ question }}"}
workflow:
  kind: self_consistency
  agent: counter
  samples: 1
  answer: text
  prompt: completion/question
"""


async def test_a_client_leaving_serve_api_mid_stream_frees_the_engine(engine, tmp_path) -> None:
    base = engine.urls[0].removesuffix("/v1")
    workflow = tmp_path / "long_count.yaml"
    workflow.write_text(WORKFLOW)
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", str(workflow),
            "--backend", engine.urls[0], "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=120)  # fmt: skip
    await proc.start()
    try:
        assert proc.url is not None
        body = {
            "model": "long_count",
            "messages": [{"role": "user", "content": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"}],
            "stream": True,
        }
        async with aiohttp.ClientSession() as session:
            client = aiohttp.ClientSession()
            reply = await client.post(proc.url + "/chat/completions", json=body)
            first = await reply.content.readline()  # the stream has begun: the role chunk
            assert reply.status == 200 and first.startswith(b"data:"), first

            async def running() -> bool:
                return (await _metrics(session, base))["vllm:num_requests_running"] == 1

            await _until(running, "the workflow's call running on the engine")
            reply.close()  # the client goes mid-stream: its connection closes
            await client.close()
            gone_at = time.monotonic()
            idle_after = await _seconds_until_idle(session, base, gone_at)
    finally:
        await proc.stop()
    print(f"\nclient gone -> engine idle: {idle_after:.3f} s")
    assert idle_after < ISSUE_BOUND_S, f"the run's request left the engine after {idle_after:.2f} s"


async def test_the_deepconf_online_example_runs_on_the_engine(engine, tmp_path) -> None:
    """examples/deepconf_online.yaml on the engine, at a smaller budget (16 warm-up, 20
    in all; 13 s here, 3 of its 4 streamed traces cut): every trace is in the
    transcript, streamed ones with their confidence curve, cut ones with no answer and
    only the tokens they streamed, and the run's usage is the traces' tokens."""
    from concilium.graphs import run
    from concilium.graphs.workflows import load_workflow

    text = (ROOT / "examples" / "deepconf_online.yaml").read_text()
    # smaller, and harder to settle (tau 1: the warm-up's two voters must agree), so
    # traces are streamed and watched on the engine
    small = text
    for old, new in [("budget: 32", "budget: 20"), ("consensus: 0.95", "consensus: 1.0")]:
        assert f"  {old}\n" in small
        small = small.replace(f"  {old}\n", f"  {new}\n")
    (tmp_path / "online.yaml").write_text(small)
    workflow = load_workflow(tmp_path / "online.yaml", api_base=engine.urls[0])
    result = await run(workflow.graph, "What is the capital of Kenya?")  # it often errs
    traces: list[dict[str, Any]] = [dict(t) for t in result.transcript]
    details = result.details
    assert len(traces) == details["traces"] and 16 <= len(traces) <= 20
    assert details["stopped_by"] == "budget" or details["agreement"] == 1.0
    assert [t["step"] for t in traces[:16]] == ["warmup"] * 16
    cut = [t for t in traces if t["stopped"] == "below_threshold" and t["step"] == "online"]
    assert details["aborted"]["below_threshold"] >= len(cut)
    assert all(t["sample_tokens"] == len(t["curve"]) for t in traces)
    for t in cut:  # a cut trace never finished; it cost the tokens it streamed
        assert t["answer"] is None and t["completion_tokens"] == t["sample_tokens"]
    assert result.usage.completion_tokens == sum(t["completion_tokens"] for t in traces)
    assert details["generated_tokens"] == result.usage.completion_tokens
    print(f"\nexample on the engine: {len(traces)} traces, {len(cut)} cut, answer {result.answer}")
