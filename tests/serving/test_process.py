"""ManagedProcess keeps a server's whole output in its log file, a failed start names
that file beside the last lines, and a managed process ends with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
