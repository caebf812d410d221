"""Inspect AI scores a served workflow through the ``concilium/<workflow>`` provider.

``inspect eval`` (the real CLI of the pinned inspect-ai) runs as a subprocess and
finds the provider through concilium's ``inspect_ai`` entry point; it talks to
``concilium serve api`` (a subprocess) on the simulated server (a test double).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from concilium.serving import ManagedProcess, SimServer

TASKS = Path(__file__).with_name("inspect_tasks.py")
INSPECT = Path(sys.executable).with_name("inspect")


@pytest_asyncio.fixture
async def api(sim: SimServer) -> AsyncIterator[ManagedProcess]:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml",
            "--backend", sim.url, "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=120)  # fmt: skip
    yield await proc.start()
    await proc.stop()


def inspect_eval(task: str, url: str, logs: Path) -> tuple[int, dict[str, Any]]:
    """Run ``inspect eval`` on one task of TASKS; its exit code and its JSON log."""
    env = {**os.environ, "CONCILIUM_BASE_URL": url, "INSPECT_LOG_DIR": str(logs)}
    argv = [str(INSPECT), "eval", f"{TASKS}@{task}", "--model", "concilium/debate",
            "--log-format", "json", "--no-log-realtime", "--display", "plain",
            "--max-retries", "0"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    (log,) = logs.glob("*.json")
    return done.returncode, json.loads(log.read_text())


async def test_inspect_scores_a_served_debate_and_keeps_its_reasoning(
    api: ManagedProcess, sim: SimServer, tmp_path: Path
) -> None:
    assert api.url is not None
    code, log = await _in_thread(inspect_eval, "arithmetic", api.url, tmp_path)
    assert code == 0 and log["status"] == "success"
    samples = log["samples"]
    assert len(samples) == 3 and len(await sim.requests()) == 18  # 6 calls per debate
    for sample in samples:
        answer = sample["output"]["choices"][0]["message"]["content"]
        reasoning, text = answer
        assert reasoning["type"] == "reasoning" and "[round 2 carol]" in reasoning["reasoning"]
        assert "[votes]" in reasoning["reasoning"]
        votes = sample["output"]["metadata"]["concilium"]["votes"]
        assert text["text"] == votes["winner"]  # the debate's answer, as the text
        right = text["text"] == sample["target"]
        assert sample["scores"]["match"]["value"] == ("C" if right else "I")
    accuracy = log["results"]["scores"][0]["metrics"]["accuracy"]["value"]
    rights = sum(s["scores"]["match"]["value"] == "C" for s in samples)
    assert accuracy == rights / 3


async def test_a_tool_using_solver_gets_the_servers_400_naming_tools(
    api: ManagedProcess, sim: SimServer, tmp_path: Path
) -> None:
    assert api.url is not None
    _, log = await _in_thread(inspect_eval, "with_tools", api.url, tmp_path)
    assert log["status"] == "error"  # (inspect eval exits 0 with an errored task)
    message = log["error"]["message"]
    assert "concilium serve api answered 400: tools=" in message
    assert "call their own tools (its tools: section)" in message
    assert await sim.requests() == []  # refused before any model call


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
