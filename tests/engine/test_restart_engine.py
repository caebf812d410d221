"""The embedded engine killed, then hung, then stalled under ``concilium run`` comes back
each time and the run finishes.

This test starts an engine of its own (it cannot share the session's ``engine``
fixture: it kills the server), so it costs one start and three restarts, the
liveness probe's verdict on the hang (at its defaults, 5 s probes, 3 missed in a
row: 20-30 s) and on the stall (set to 20 s here; 120 s by default): four to eight
minutes on the 2-core machines it was written on, depending on their load. The
engine's API server is killed with SIGKILL while a call is being served (its
engine-core child is left for the supervisor to end); the restarted server's whole
process group is then stopped with SIGSTOP while it serves a call of the run, so the
run cannot finish without it: up, its port open, answering nothing. (Not the moment
it first answers /health: the supervisor's own readiness poll may not have seen that
answer yet, and a server stopped then is a failed start, retried after the start
deadline, not a hang; a run beside a CPU hog met exactly that.) Last, only the third
server's engine core is stopped while it serves a call: its API server still answers
/health, and its /metrics show the request running and the token count standing
still, which is how the supervisor finds it.
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


def _child(parent: int, marker: bytes, other_than: tuple[int, ...] = ()) -> int | None:
    """The child of ``parent`` whose command line holds ``marker`` (not ``other_than``):
    the vLLM API server (``vllm.entrypoints``) or its engine core (``EngineCore``)."""
    with contextlib.suppress(OSError):  # the parent ended
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            with contextlib.suppress(OSError):
                if int(child) not in other_than and marker in Path(f"/proc/{child}/cmdline").read_bytes():  # fmt: skip
                    return int(child)
    return None


def _until(what: str, check: object, proc: subprocess.Popen[str], said: list[str]) -> None:
    stop_at = time.monotonic() + 600  # a restart on a loaded 2-core machine: minutes
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"the run ended before {what}: {''.join(said)}"
        assert time.monotonic() < stop_at, f"no {what} within 600 s: {''.join(said)}"
        time.sleep(0.05)


def test_an_engine_killed_hung_then_stalled_mid_run_is_restarted_each_time_and_the_run_finishes() -> None:  # fmt: skip
    # four rounds (12 calls) so the run still has calls to make after the second restart
    args = [sys.executable, "-P", "-m", "concilium", "run", "examples/base_debate.yaml",
            "--backend", "local", "--input", "What is the capital of France?", "--json",
            "--set", "workflow.rounds=4"]  # fmt: skip
    # the probe's defaults, with a stall verdict after 20 s instead of 120 s
    env = {**os.environ, "CONCILIUM_LIVENESS": "5,5,3,20"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    said: list[str] = []
    hung: int | None = None
    core: int | None = None
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
        dead = _child(proc.pid, b"vllm.entrypoints")
        assert dead is not None
        os.kill(dead, signal.SIGKILL)  # it dies while it serves a call of the run
        # the restarted server, once the supervisor has it up and it serves the calls
        # that waited for it: stopped whole, with a call of the run in it
        _until("a call served by the restarted engine", lambda: _serving(port), proc, said)
        hung = _child(proc.pid, b"vllm.entrypoints", other_than=(dead,))
        assert hung is not None
        os.killpg(hung, signal.SIGSTOP)
        # the third server: only its engine core stopped, with a call of the run in it
        # (the stopped server holds the port, so _serving is False until it is replaced)
        third = (dead, hung)
        _until("a call served by the third engine",
               lambda: _child(proc.pid, b"vllm.entrypoints", third) and _serving(port), proc, said)  # fmt: skip
        stalled = _child(proc.pid, b"vllm.entrypoints", other_than=third)
        core = _child(stalled, b"EngineCore") if stalled else None
        assert stalled is not None and core is not None
        os.kill(core, signal.SIGSTOP)
        stdout, rest = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # Ctrl-C: the run stops its engine on the way out
            for stopped in (hung, core):
                if stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(stopped, signal.SIGKILL)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    stderr = "".join(said) + rest
    what = "\n".join(
        line
        for line in stderr.splitlines()
        if re.search(r"died|hung|stalled|did not start|not restarted|failed", line)
    )
    assert proc.returncode == 0, f"{what}\n...\n{stderr[-1500:]}"
    assert json.loads(stdout)["answer"], stdout
    supervisor = [line for line in stderr.splitlines() if "restarting it on the same port" in line]
    assert len(supervisor) == 3, what
    assert " died (killed by SIGKILL); " in supervisor[0], what
    assert f" hung: http://127.0.0.1:{port}/health gave no answer to 3 probes in a row " in supervisor[1], what  # fmt: skip
    assert re.search(r" stalled: \d+ request\(s\) running or waiting and no token counted for \d+ s "
                     rf"\(http://127\.0\.0\.1:{port}/metrics; its /health still answered\)", supervisor[2]), what  # fmt: skip
    kept = [Path(line.rsplit("its log: ", 1)[1]) for line in supervisor]
    for log, how, pid in zip(kept, ("died", "hung", "hung"), (dead, hung, stalled), strict=True):
        assert log.name.startswith(f"port-{port}-{how}-") and log.name.endswith(f"-pid{pid}.log")
        assert log.stat().st_size > 0
    for group in (dead, hung, stalled):  # what each left was ended, the stopped ones included
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
