"""End to end on the real engine: vLLM's CPU build serving Gemma 3 270M base.

A 270M base model's answers are noise, so these assert protocol and orchestration
(samples per request, concurrency, logprobs, schema-constrained output, failures),
never answer quality.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from concilium._errors import ModelCallError
from concilium.agents import Agent, AnswerConfidence, aclose
from concilium.graphs import run
from concilium.graphs.patterns import confidence_consistency, debate, self_consistency
from concilium.serving.engine import local_engine

ROOT = Path(__file__).resolve().parents[2]


def _recorder() -> tuple[list[tuple[float, dict[str, Any]]], Any]:
    events: list[tuple[float, dict[str, Any]]] = []
    return events, lambda e: events.append((time.monotonic(), e))


async def test_self_consistency_gets_n_distinct_samples_from_one_request(engine) -> None:
    # vLLM gives the n samples of a seeded request seeds seed, seed+1, ...; unseeded, the
    # first request after the engine starts is fixed too, and at 24 tokens two of its four
    # samples echoed the instruction word for word (the base model copies its prompt), so
    # the samples run past the prompt's length and the seed makes the run reproducible
    agent = Agent("sampler", engine.spec(), temperature=1.0, max_tokens=48, seed=1)
    events, on_event = _recorder()
    result = await run(self_consistency(agent, samples=4), "What is 17 + 25?", on_event=on_event)
    started = [e for _, e in events if e["type"] == "call_started"]
    assert len(started) == 1 and result.calls == 1
    texts = [entry["text"] for entry in result.transcript]
    assert len(texts) == 4 and len(set(texts)) == 4  # four different samples
    assert result.usage.completion_tokens > 4  # real tokens were generated


async def test_debate_runs_each_rounds_calls_concurrently(engine) -> None:
    agents = [
        Agent(name, engine.spec(), temperature=0.8, max_tokens=24)
        for name in ("alice", "bob", "carol")
    ]
    events, on_event = _recorder()
    result = await run(debate(agents, rounds=2), "What is 6 * 7?", on_event=on_event)
    calls = [(t, e) for t, e in events if e["type"] in ("call_started", "call_finished")]
    assert result.calls == 6 and len(result.transcript) == 6
    # round 1: all three calls start before any of them finishes; same for round 2
    for first, last in ((0, 6), (6, 12)):
        window = [e["type"] for _, e in calls[first:last]]
        assert window == ["call_started"] * 3 + ["call_finished"] * 3, window
    # round 2 prompts hold the other agents' round 1 answers
    assert all(len(entry["saw"]) == 2 for entry in result.transcript if entry["round"] == 2)


async def test_logprobs_reach_the_confidence_code(engine) -> None:
    agent = Agent(
        "judge", engine.spec(), temperature=1.0, max_tokens=16, logprobs=True, top_logprobs=5
    )
    reply = await agent.run("Name a prime number.", n=3)
    for logprobs in reply.logprobs_all:
        assert logprobs and all(len(token.top) == 5 for token in logprobs)
    # DeepConf (confidence_consistency) scores each trace from those top-5 logprobs
    sampler = Agent("judge", engine.spec(), temperature=1.0, max_tokens=16)
    deepconf = confidence_consistency(sampler, samples=3, window=4, top_logprobs=5, answer="text")
    result = await run(deepconf, "Name a prime number.")
    confidences = result.details["confidences"]
    # C_t = -mean(top-5 logprobs) > 0 whenever the top candidates are not all certain
    assert len(confidences) == 3 and all(math.isfinite(c) and c > 0 for c in confidences)
    answered = [c for c, t in zip(confidences, result.transcript, strict=True) if t["answer"]]
    assert result.votes is not None
    assert sum(result.votes["weights"].values()) == pytest.approx(sum(answered), abs=1e-5)


async def test_json_schema_output_parses(engine) -> None:
    agent = Agent(
        "structured", engine.spec(), temperature=0.0, max_tokens=96, output=AnswerConfidence
    )
    reply = await agent.run("What is 2 + 2? Give your answer and confidence.")
    parsed = reply.parsed
    assert isinstance(parsed, AnswerConfidence) and 0.0 <= parsed.confidence <= 1.0


async def test_the_tokenizer_adds_bos_and_the_chat_template_renders_every_message(engine) -> None:
    base = engine.urls[0].removesuffix("/v1")
    async with aiohttp.ClientSession() as session:
        body = {"model": "gemma-3-270m", "prompt": "Hello"}
        async with session.post(f"{base}/tokenize", json=body) as resp:
            tokens = (await resp.json())["tokens"]
        assert tokens[0] == 2  # <bos>
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "first question"}]},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second question"},
        ]
        async with session.post(f"{base}/tokenize", json={"model": "gemma-3-270m", "messages": messages,
                                                         "add_generation_prompt": True}) as resp:  # fmt: skip
            count = (await resp.json())["count"]
        async with session.post(f"{base}/tokenize", json={"model": "gemma-3-270m", "messages": messages[:1],
                                                         "add_generation_prompt": True}) as resp:  # fmt: skip
            system_only = (await resp.json())["count"]
    assert count > system_only + 10  # the list-of-parts message and both turns were rendered


async def test_a_replica_killed_mid_run_is_a_clear_error() -> None:
    # not restarted (max_restarts=0): a restart is test_restart_engine.py's
    async with local_engine(1, kv_cache_gb=1, max_restarts=0) as doomed:
        agent = Agent("victim", doomed.spec(timeout=60), temperature=1.0, max_tokens=256)
        call = asyncio.ensure_future(agent.run("Write a long story about a lighthouse."))
        await asyncio.sleep(1.0)  # the request is being decoded
        doomed.processes[0].kill()
        with pytest.raises(ModelCallError) as info:
            await call
        await aclose()
    message = str(info.value)
    assert doomed.urls[0] in message and "gemma-3-270m" in message
    assert "is the server running?" in message


def _labels(text: str) -> list[str]:
    """Each printed line with its figures masked and its spacing folded: what was
    printed, in order, whatever the numbers came out as."""
    masked = (re.sub(r"\s+", " ", re.sub(r"-?\d+(\.\d+)?", "#", line)).strip()
              for line in text.strip().splitlines())  # fmt: skip
    return [
        line
        for line in masked
        if line and not line.startswith(("plot:", "starting", "engine ready"))
    ]


async def test_make_demo_command_prints_what_the_readme_shows(engine: Any, tmp_path: Path) -> None:
    """concilium demo on the engine (the shared one, to save the start; make demo starts
    its own through the same session code): the README's first screen shows its real
    output, so every line shown there is printed, in the same order."""
    args = [sys.executable, "-P", "-m", "concilium", "demo", "--backend", engine.urls[0],
            "--items", "4", "--repeats", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    out = await asyncio.to_thread(
        subprocess.run, args, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-2000:]
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- demo-output -->\n```text\n(.*?)```", readme, re.S)
    assert shown is not None
    printed = iter(_labels(out.stdout))
    missing = [line for line in _labels(shown.group(1)) if line not in printed]
    assert missing == [], f"shown in the README but not printed, in order: {missing}"


async def test_plan_and_execute_runs_a_json_plan_from_the_engine(engine) -> None:
    from concilium.graphs.workflows import load_workflow

    workflow = load_workflow(ROOT / "examples" / "plan_and_execute.yaml", api_base=engine.urls)
    question = "How tall is the Halvik lighthouse, when was it built, and how many years before 2024 was that?"
    result = await run(workflow.graph, question)
    first = result.details["rounds"][0]
    # guided decoding keeps even a 270M base model to the plan schema and the tool names
    assert "plan_error" not in first and first["tasks"]
    assert {t["tool"] for t in first["tasks"]} <= {"search", "calculator", "join"}
    assert result.answer
