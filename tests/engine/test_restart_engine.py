"""The embedded engine killed under ``concilium run`` comes back and the run finishes.

This test starts an engine of its own (it cannot share the session's ``engine``
fixture: it kills the server), so it costs one start and one restart: two to five
minutes on the 2-core machines it was written on, depending on their load. The engine's API server is killed with SIGKILL while a call is being
served; its engine-core child is left for the supervisor to end.
"""

from __future__ import annotations

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


def _server_pid(parent: int) -> int:
    """The vLLM API server among ``parent``'s children."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if b"vllm.entrypoints" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError(f"no vLLM server among the children of {parent}")


def test_an_engine_killed_mid_run_is_restarted_and_the_run_finishes() -> None:
    args = [sys.executable, "-P", "-m", "concilium", "run", "examples/base_debate.yaml",
            "--backend", "local", "--input", "What is the capital of France?", "--json"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    said: list[str] = []
    try:
        for line in proc.stderr:  # start-up lines, until the engine is ready
            said.append(line)
            ready = re.search(r"engine ready in \d+ s at (\d+)", line)
            if ready:
                break
        else:
            raise AssertionError(f"the engine did not start: {''.join(said)}")
        port = int(ready.group(1))
        stop_at = time.monotonic() + 120
        while not _serving(port):  # kill it while it serves a call of the run
            assert proc.poll() is None and time.monotonic() < stop_at, "".join(said)
            time.sleep(0.05)
        dead = _server_pid(proc.pid)
        os.kill(dead, signal.SIGKILL)
        stdout, rest = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # Ctrl-C: the run stops its engine on the way out
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    stderr = "".join(said) + rest
    what = "\n".join(
        line
        for line in stderr.splitlines()
        if re.search(r"died|did not start|not restarted|failed", line)
    )
    assert proc.returncode == 0, f"{what}\n...\n{stderr[-1500:]}"
    assert json.loads(stdout)["answer"], stdout
    died = [line for line in stderr.splitlines() if "died" in line]
    assert len(died) == 1 and "killed by SIGKILL" in died[0], stderr[-3000:]
    kept = Path(died[0].rsplit("its log: ", 1)[1])
    assert f"port-{port}-died-" in kept.name and kept.stat().st_size > 0
    with pytest.raises(ProcessLookupError):  # what the dead server left was ended
        os.killpg(dead, 0)
