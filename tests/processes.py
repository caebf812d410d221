"""Process checks the tests share (imported as ``from processes import gone``)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def gone(pid: int | None) -> bool:
    """Whether process ``pid`` has ended (a started process always has a pid). A
    zombie has ended: an orphan's zombie stays until init reaps it, and the init of
    a container may never do so."""
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    if not Path("/proc/self/stat").exists():  # not Linux: no zombies to tell apart
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # it was reaped just now
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # the name, in (), may hold spaces


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` and by those, now (Linux's /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended while we looked
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def wait_gone(pids: list[int], within: float = 60.0) -> list[int]:
    """Wait until every process in ``pids`` has ended; return those still running
    after ``within`` seconds (a bound for a loaded machine, not a timing)."""
    stop = time.monotonic() + within
    while (left := [p for p in pids if not gone(p)]) and time.monotonic() < stop:
        time.sleep(0.2)
    return left
