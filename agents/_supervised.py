"""Servers a supervisor restarts: a call that failed at one waits until it is back.

The embedded engine (``concilium.serving``) runs under a supervisor that restarts a
replica that dies, on the same URL. The supervisor registers each URL it keeps alive
(``supervise``), and the call ledger, when a request to such a URL fails and no other
replica can take it, awaits ``restarted(url)``: a restart takes most of a minute, far
longer than the retries' backoff, and a call should outlive it rather than give up.
Only a failed request asks; a call that succeeds never looks here.

Example:
    >>> import asyncio
    >>> async def back() -> bool:
    ...     return True  # a supervisor waits for the restart here
    >>> with supervise({"http://127.0.0.1:9/v1": back}):
    ...     asyncio.run(restarted("http://127.0.0.1:9/v1"))
    True
    >>> asyncio.run(restarted("http://127.0.0.1:9/v1"))
    False
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping

Back = Callable[[], Awaitable[bool]]

# api_base -> wait until its server is back: True after a restart, False when it is up
# (the failure was something else) or its supervisor gave up or stopped
_supervised: dict[str, Back] = {}


@contextlib.contextmanager
def supervise(waits: Mapping[str, Back]) -> Iterator[None]:
    """Register each URL's wait while the block runs (a supervisor's lifetime)."""
    _supervised.update(waits)
    try:
        yield
    finally:
        for url, wait in waits.items():
            if _supervised.get(url) is wait:
                del _supervised[url]


async def restarted(api_base: str | None) -> bool:
    """Whether ``api_base``'s server was down and has been restarted (waiting for the
    restart when one is under way); ``False`` when nobody supervises it, it is up, or
    its supervisor gave up."""
    wait = _supervised.get(api_base) if api_base is not None else None
    return False if wait is None else await wait()
