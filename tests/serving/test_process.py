"""ManagedProcess keeps a server's whole output in its log file, and a failed start
names that file beside the last lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
