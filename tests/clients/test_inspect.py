"""Inspect AI scores a served workflow through the ``concilium/<workflow>`` provider.

``inspect eval`` (the real CLI of the pinned inspect-ai) runs as a subprocess and
finds the provider through concilium's ``inspect_ai`` entry point; it talks to
``concilium serve api`` (a subprocess) on the simulated server (a test double).
One ``inspect eval`` runs both tasks of tests/clients/inspect_tasks.py (one after the
other, Inspect's default): the tests below read its two logs and the calls the
simulated server received, told apart by their questions.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from concilium.agents import aclose
from concilium.agents.sim import Latency, SimConfig
from concilium.serving import ManagedProcess, SimServer

TASKS = Path(__file__).with_name("inspect_tasks.py")
INSPECT = Path(sys.executable).with_name("inspect")
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Inspected:
    code: int  # inspect eval's exit code
    logs: dict[str, dict[str, Any]]  # task name -> its JSON log
    calls: list[dict[str, Any]]  # every request the simulated server received


def inspect_eval(tasks: list[str], url: str, logs: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run ``inspect eval`` on tasks of TASKS; its exit code and each task's JSON log."""
    env = {**os.environ, "CONCILIUM_BASE_URL": url, "INSPECT_LOG_DIR": str(logs)}
    argv = [str(INSPECT), "eval", *(f"{TASKS}@{task}" for task in tasks),
            "--model", "concilium/debate", "--log-format", "json", "--no-log-realtime",
            "--display", "plain", "--max-retries", "0"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    found = [json.loads(log.read_text()) for log in logs.glob("*.json")]
    return done.returncode, {log["eval"]["task"].rsplit("/", 1)[-1]: log for log in found}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def inspected(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Inspected]:
    async with SimServer(SimConfig(seed=1, latency=Latency(fixed=0.02))) as sim:
        argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml",
                "--backend", sim.url, "--port", "0"]  # fmt: skip
        proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                              health_url="{url}/health", deadline=120)  # fmt: skip
        api = await proc.start()
        try:
            assert api.url is not None
            logs = tmp_path_factory.mktemp("inspect")
            code, found = await asyncio.to_thread(
                inspect_eval, ["arithmetic", "with_tools"], api.url, logs
            )
        finally:
            await proc.stop()
        yield Inspected(code, found, await sim.requests())
        await aclose()


def _asks(call: dict[str, Any], question: str) -> bool:
    return any(question in str(m.get("content")) for m in call["body"]["messages"])


async def test_inspect_scores_a_served_debate_and_keeps_its_reasoning(
    inspected: Inspected,
) -> None:
    assert inspected.code == 0 and set(inspected.logs) == {"arithmetic", "with_tools"}
    log = inspected.logs["arithmetic"]
    assert log["status"] == "success"
    samples = log["samples"]
    assert len(samples) == 3 and len(inspected.calls) == 18  # 6 calls per debate
    for sample in samples:
        assert sum(_asks(call, sample["input"]) for call in inspected.calls) == 6
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
    inspected: Inspected,
) -> None:
    log = inspected.logs["with_tools"]
    assert log["status"] == "error"  # (inspect eval exits 0 with an errored task)
    message = log["error"]["message"]
    assert "concilium serve api answered 400: tools=" in message
    assert "call their own tools (its tools: section)" in message
    # refused before any model call: the server saw the 18 debate calls and no other
    assert len(inspected.calls) == 18
    assert not [call for call in inspected.calls if _asks(call, "Use the tool")]
