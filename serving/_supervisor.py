"""Keeping servers up: a replica that dies is restarted on its own port, its log kept.

A ``Supervisor`` watches each running replica (a ``ManagedProcess``). When one exits
it ends what the process left behind (vLLM's engine core), moves its log aside so the
next start does not overwrite it, prints one line saying what happened and where that
log is, and starts a new process with the same command on the same port, so every URL
handed out stays valid (a start that fails is one more restart, tried again). Calls that failed meanwhile wait for the restart: each URL is
registered with the call ledger (``concilium.agents.ledger.supervise``), which asks
after a failed request. A replica that dies ``max_restarts`` times within ``window``
seconds is not restarted again (a line says so, and calls to it fail).

Example:
    >>> describe_exit(-9), describe_exit(1)
    ('killed by SIGKILL', 'exit code 1')
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import signal
import sys
import time
from collections.abc import Callable, Sequence

from concilium._errors import ServerError
from concilium.agents.ledger import supervise

from ._process import ManagedProcess

Log = Callable[[str], None]

MAX_RESTARTS = 3  # per replica, within WINDOW seconds
WINDOW = 600.0


def describe_exit(code: int) -> str:
    """An exit code in words (asyncio gives a signal's death as its negative number)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Supervisor:
    """Restarts the replicas in ``processes`` (the list is updated in place).

    Args:
        processes: the running replicas.
        replica: builds replica ``i``'s process anew (same command, same port).
        urls: replica ``i``'s ``.../v1`` URL, registered with the call ledger.
        max_restarts: restarts of one replica allowed within ``window`` seconds.
        notice: receives the one line per death (default: stderr).

    Use it as an async context manager around the time the replicas serve; leave it
    before stopping them (a stop is not a death).
    """

    def __init__(
        self,
        processes: list[ManagedProcess],
        replica: Callable[[int], ManagedProcess],
        urls: Sequence[str],
        *,
        max_restarts: int = MAX_RESTARTS,
        window: float = WINDOW,
        notice: Log | None = None,
    ) -> None:
        self.processes = processes
        self.replica = replica
        self.urls = list(urls)
        self.max_restarts = max_restarts
        self.window = window
        self.notice = notice or _stderr
        self.restarts = [0] * len(processes)  # in all (a test can count them)
        self._recent = [collections.deque[float]() for _ in processes]
        self._up = [asyncio.Event() for _ in processes]
        self._given_up = [False] * len(processes)
        self._watchers: list[asyncio.Task[None]] = []
        self._registered = contextlib.ExitStack()

    async def __aenter__(self) -> Supervisor:
        for up in self._up:
            up.set()
        waits = {url: functools.partial(self._back, i) for i, url in enumerate(self.urls)}
        self._registered.enter_context(supervise(waits))
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(len(self.processes))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for i, up in enumerate(self._up):  # calls still waiting stop waiting: no restart
            self._given_up[i] = True
            up.set()
        self._registered.close()

    async def _back(self, i: int) -> bool:
        """For the ledger: wait while replica ``i`` is being restarted; whether it was."""
        if self._given_up[i]:
            return False
        if self.processes[i].returncode is not None:
            self._up[i].clear()  # it died, and its watcher has not seen it yet
        if self._up[i].is_set():
            return False  # it is up: the failure was something else
        await self._up[i].wait()
        return not self._given_up[i]

    async def _watch(self, i: int) -> None:
        dead = self.processes[i]
        what = f"{dead.name} died ({describe_exit(await dead.exited())})"
        while True:
            self._up[i].clear()
            kept = dead.keep_log(f"died-{time.strftime('%Y%m%d-%H%M%S')}-pid{dead.pid}")
            where = f"its log: {kept}" if kept else "it kept no log"
            now = time.monotonic()
            recent = self._recent[i]
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) >= self.max_restarts:
                self._give_up(
                    i,
                    f"{what}; not restarted: it was restarted {len(recent)} time(s) within "
                    f"{self.window:g} s (the limit), so calls to it fail from now on; {where}",
                )
                return
            recent.append(now)
            self.restarts[i] += 1
            self.notice(f"{what}; restarting it on the same port, calls wait for it; {where}")
            replacement = self.replica(i)
            try:
                await replacement.start()
            except ServerError:  # a failed start counts as a restart, and is tried again
                dead, what = replacement, f"{replacement.name} did not start ({replacement.failed})"
                continue
            self.processes[i] = dead = replacement
            self._up[i].set()
            what = f"{dead.name} died ({describe_exit(await dead.exited())})"

    def _give_up(self, i: int, line: str) -> None:
        self._given_up[i] = True
        self._up[i].set()
        self.notice(line)
