"""Process checks the tests share (imported as ``from processes import gone``)."""

from __future__ import annotations

import os


def gone(pid: int | None) -> bool:
    """Whether process ``pid`` has ended (a started process always has a pid)."""
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
