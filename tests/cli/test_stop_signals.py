"""A command stopped by SIGTERM (``kill``, systemd, ``docker stop``) closes what it owns
before it ends, as Ctrl-C does: a server (``serve api``, ``ui``) returns from serving
and exits 0 once its session closed; ``run`` stops mid-run with "interrupted" and 130.
What shows the close here is the spans: the exporter is set to send only at shutdown,
so spans reach the OTLP receiver only if the process closed its tracing. (Before, the
process died of the signal, -15, and its session, engine included, was never closed:
tests/engine/test_ui_engine.py checks that no engine outlives the UI.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from otlp_receiver import Receiver, named

from concilium.agents.sim import Latency, SimConfig
from concilium.serving import SimServer
from concilium.ui import RunHistory

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-P", "-m", "concilium"]
NEVER_ON_SCHEDULE = {"OTEL_BSP_SCHEDULE_DELAY": "3600000"}  # only shutdown's flush sends


@contextlib.asynccontextmanager
async def _running(
    argv: list[str], env: dict[str, str], ready: str | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The command, started; with ``ready``, once a line matched it (group 1 is
    yielded). Killed on the way out if still running."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        while ready and not (found := re.search(ready, "".join(seen))):
            line = (await asyncio.wait_for(proc.stderr.readline(), 120)).decode()
            assert line, f"{argv[4]} exited early: {''.join(seen)}"
            seen.append(line)
        yield proc, found.group(1) if ready else ""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _terminate(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    assert proc.stderr is not None
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stderr.read(), 120)
    return await proc.wait(), rest.decode()


@pytest.mark.parametrize("command", ["serve api", "ui"])
async def test_a_server_stopped_by_sigterm_closes_its_session_and_exits_0(
    command: str, receiver: Receiver, tmp_path: Path
) -> None:
    env = {**receiver.env(), **NEVER_ON_SCHEDULE}
    if command == "serve api":
        argv = [*CLI, "serve", "api", "examples/debate.yaml", "-b", "sim", "--port", "0"]
        ready = r"at (http://127\.0\.0\.1:\d+)/v1"
    else:
        argv = [*CLI, "ui", "-b", "sim", "--port", "0", "--workflows", "examples/debate.yaml",
                "--state", str(tmp_path / "ui.db")]  # fmt: skip
        ready = r"concilium ui at (http://127\.0\.0\.1:\d+)"
    async with _running(argv, env, ready) as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            if command == "serve api":
                body = {"model": "debate", "messages": [{"role": "user", "content": "What is 2+2?"}]}  # fmt: skip
                reply = await client.post("/v1/chat/completions", json=body)
                assert reply.status_code == 200, reply.text
            else:
                form = {"workflow": "debate", "question": "What is 2+2?"}
                reply = await client.post("/runs", data=form)
                assert reply.status_code == 303, reply.text
                run = reply.headers["location"].rsplit("/", 1)[1]
                history = RunHistory(tmp_path / "ui.db")
                while (history.get(run) or {}).get("result") is None:
                    assert proc.returncode is None
                    await asyncio.sleep(0.1)
        assert not named(receiver.snapshot(), "invoke_workflow")  # held until shutdown
        code, rest = await _terminate(proc)
    assert code == 0, (code, rest)
    assert "Traceback" not in rest, rest
    assert named(receiver.snapshot(), "invoke_workflow debate")  # flushed as it closed


async def test_run_stopped_by_sigterm_mid_run_says_interrupted_and_exits_130(
    receiver: Receiver,
) -> None:
    # the simulated server (a test double) holds every reply for a minute
    async with SimServer(SimConfig(seed=1, latency=Latency(fixed=60))) as sim:
        argv = [*CLI, "run", "examples/debate.yaml", "-i", "What is 2+2?", "-b", sim.url]
        async with _running(argv, {**receiver.env(), **NEVER_ON_SCHEDULE}) as (proc, _):
            async with httpx.AsyncClient() as client:
                stats = f"{sim.base}/sim/stats"
                while json.loads((await client.get(stats)).text)["requests"] == 0:
                    assert proc.returncode is None
                    await asyncio.sleep(0.1)
            code, rest = await _terminate(proc)
    assert code == 130, (code, rest)
    assert rest.strip().splitlines()[-1] == "interrupted", rest
    assert "Traceback" not in rest, rest
    assert len(named(receiver.snapshot(), "invoke_workflow debate")) == 1  # flushed on the way out


def test_a_command_invoked_in_process_puts_the_sigterm_handler_back() -> None:
    from click.testing import CliRunner

    from concilium.cli import main

    before = signal.getsignal(signal.SIGTERM)
    got = CliRunner().invoke(main, ["validate", str(ROOT / "examples" / "debate.yaml")])
    assert got.exit_code == 0, got.output
    assert signal.getsignal(signal.SIGTERM) is before
