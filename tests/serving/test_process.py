"""ManagedProcess keeps a server's whole output in its log file, a failed start names
that file beside the last lines, a managed process ends with its parent, and its death
is seen before asyncio reaps it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import gone, wait_gone

from concilium._errors import ServerError
from concilium.serving import ManagedProcess


async def test_a_failed_start_names_the_log_that_holds_every_line(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "server.log"  # the folder does not exist yet
    script = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)"
    proc = ManagedProcess("test server", [sys.executable, "-c", script],
                          ready_pattern="never printed", deadline=30, keep_lines=5, log_path=log)  # fmt: skip
    with pytest.raises(ServerError) as caught:
        await proc.start()
    message = str(caught.value)
    assert "exited with code 3" in message and str(log) in message
    assert "line 99" in message and "line 0\n" not in message  # only the last 5 in the message
    assert log.read_text().splitlines() == [f"line {i}" for i in range(100)]


async def test_without_a_log_path_the_message_names_no_file() -> None:
    proc = ManagedProcess("quiet server", [sys.executable, "-c", "print('bye')"],
                          ready_pattern="never printed", deadline=30)  # fmt: skip
    with pytest.raises(ServerError) as caught:
        await proc.start()
    assert "all of it" not in str(caught.value) and "bye" in str(caught.value)


PARENT = """
import asyncio, sys
from concilium.serving import ManagedProcess

async def main():
    child = ManagedProcess("child", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
                           ready_pattern="up", deadline=60)
    await child.start()
    print(child.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the leash is Linux's prctl")
def test_a_managed_process_ends_when_the_process_that_started_it_is_killed() -> None:
    """It runs in a session of its own, so a signal to the parent's group misses it;
    killed with SIGKILL, the parent can close nothing. The kernel ends the child."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert not gone(child)
        parent.kill()
        parent.wait()
        assert wait_gone([child]) == []
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


async def test_ended_sees_a_death_before_asyncio_does_and_a_stopped_process_is_not_ended() -> None:
    """The supervisor asks before it calls a replica that refused its probes hung: a
    process just killed refuses them too, and asyncio may not have noticed its exit yet
    (calls failing at once poke the probe several times within milliseconds)."""
    proc = await ManagedProcess("sleeper", ["sleep", "600"], deadline=30).start()
    assert proc.pid is not None and not proc.ended()
    os.kill(proc.pid, signal.SIGSTOP)
    assert not proc.ended()  # stopped is alive: a hang, not a death
    os.kill(proc.pid, signal.SIGKILL)
    stop_at = time.monotonic() + 30
    while not proc.ended():  # no await: the event loop cannot hear of the exit meanwhile
        assert time.monotonic() < stop_at
        time.sleep(0.01)  # noqa: ASYNC251 -- on purpose: the loop must not run
    assert proc.returncode is None  # asyncio has not noticed; ended() has
    await proc.stop()
    assert proc.returncode == -signal.SIGKILL and proc.ended()
