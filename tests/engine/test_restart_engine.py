"""The embedded engine killed, then hung, under ``concilium run`` comes back each time
and the run finishes.

This test starts an engine of its own (it cannot share the session's ``engine``
fixture: it kills the server), so it costs one start and two restarts, and the
liveness probe's verdict on the hang (at its defaults, 5 s probes, 3 missed in a
row: 20-30 s): three to six minutes on the 2-core machines it was written on,
depending on their load. The engine's API server is killed with SIGKILL while a call
is being served (its engine-core child is left for the supervisor to end); the
restarted server's whole process group is then stopped with SIGSTOP while it serves a
call of the run, so the run cannot finish without it: up, its port open, answering
nothing. (Not the moment it first answers /health: the supervisor's own readiness
poll may not have seen that answer yet, and a server stopped then is a failed start,
retried after the start deadline, not a hang; a run beside a CPU hog met exactly that.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]


def _serving(port: int) -> bool:
    """Whether the engine has a request running or waiting (from its /metrics)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return False
    counts = re.findall(r"^vllm:num_requests_(?:running|waiting)\{[^}]*\} (\S+)", text, re.M)
    return any(float(c) > 0 for c in counts)


def _server_pid(parent: int, other_than: int = 0) -> int:
    """The vLLM API server among ``parent``'s children (not ``other_than``)."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        with contextlib.suppress(OSError):
            if int(child) != other_than and b"vllm.entrypoints" in Path(f"/proc/{child}/cmdline").read_bytes():  # fmt: skip
                return int(child)
    raise AssertionError(f"no vLLM server among the children of {parent}")


def _until(what: str, check: object, proc: subprocess.Popen[str], said: list[str]) -> None:
    stop_at = time.monotonic() + 600  # a restart on a loaded 2-core machine: minutes
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"the run ended before {what}: {''.join(said)}"
        assert time.monotonic() < stop_at, f"no {what} within 600 s: {''.join(said)}"
        time.sleep(0.05)


def test_an_engine_killed_then_hung_mid_run_is_restarted_each_time_and_the_run_finishes() -> None:
    args = [sys.executable, "-P", "-m", "concilium", "run", "examples/base_debate.yaml",
            "--backend", "local", "--input", "What is the capital of France?", "--json"]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "CONCILIUM_LIVENESS"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    said: list[str] = []
    hung = 0
    try:
        for line in proc.stderr:  # start-up lines, until the engine is ready
            said.append(line)
            ready = re.search(r"engine ready in \d+ s at (\d+)", line)
            if ready:
                break
        else:
            raise AssertionError(f"the engine did not start: {''.join(said)}")
        port = int(ready.group(1))
        _until("a call being served", lambda: _serving(port), proc, said)
        dead = _server_pid(proc.pid)
        os.kill(dead, signal.SIGKILL)  # it dies while it serves a call of the run
        # the restarted server, once the supervisor has it up and it serves the calls
        # that waited for it: stopped whole, with a call of the run in it
        _until("a call served by the restarted engine", lambda: _serving(port), proc, said)
        hung = _server_pid(proc.pid, other_than=dead)
        os.killpg(hung, signal.SIGSTOP)
        stdout, rest = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # Ctrl-C: the run stops its engine on the way out
            if hung:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(hung, signal.SIGKILL)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    stderr = "".join(said) + rest
    what = "\n".join(
        line
        for line in stderr.splitlines()
        if re.search(r"died|hung|did not start|not restarted|failed", line)
    )
    assert proc.returncode == 0, f"{what}\n...\n{stderr[-1500:]}"
    assert json.loads(stdout)["answer"], stdout
    supervisor = [line for line in stderr.splitlines() if "restarting it on the same port" in line]
    assert len(supervisor) == 2, what
    assert " died (killed by SIGKILL); " in supervisor[0], what
    assert f" hung: http://127.0.0.1:{port}/health gave no answer to 3 probes in a row " in supervisor[1], what  # fmt: skip
    kept = [Path(line.rsplit("its log: ", 1)[1]) for line in supervisor]
    assert kept[0].name.startswith(f"port-{port}-died-") and kept[0].name.endswith(
        f"-pid{dead}.log"
    )
    assert kept[1].name.startswith(f"port-{port}-hung-") and kept[1].name.endswith(
        f"-pid{hung}.log"
    )
    assert all(log.stat().st_size > 0 for log in kept)
    for group in (dead, hung):  # what each left was ended, the stopped one included
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
