"""Keeping servers up: a replica that dies or hangs is restarted on its own port, its log kept.

A ``Supervisor`` watches each running replica (a ``ManagedProcess``). When one exits
it ends what the process left behind (vLLM's engine core), moves its log aside so the
next start does not overwrite it, prints one line saying what happened and where that
log is, and starts a new process with the same command on the same port, so every URL
handed out stays valid (a start that fails is one more restart, tried again). Calls that failed meanwhile wait for the restart: each URL is
registered with the call ledger (``concilium.agents.ledger.supervise``), which asks
after a failed request. A replica that dies ``max_restarts`` times within ``window``
seconds is not restarted again (a line says so, and calls to it fail).

A replica can also hang: its process is up and its port accepts connections, but it
answers nothing (a deadlocked server, a stopped process). A liveness probe asks each
replica's health URL every ``interval`` seconds; when ``failures`` probes in a row get
no answer within ``timeout`` seconds, the process group is killed and restarted the
same way as a crash, and the line says why. Any HTTP answer, even an error, counts as
alive: only silence is a hang. An engine's core can also stop while its API server
still answers: for engines (``progress=True``) the probe also reads ``/metrics``, and
requests running or waiting with no token counted for ``stall`` seconds is a hang. A
call that fails at a replica that does not answer waits for the probe's verdict
(answering again, or restarted) instead of using up its retries. ``CONCILIUM_LIVENESS`` tunes it for every front-end (``Liveness.from_env``).

Example:
    >>> describe_exit(-9), describe_exit(1)
    ('killed by SIGKILL', 'exit code 1')
    >>> Liveness.parse("10,5,4"), Liveness.parse("off").enabled
    (Liveness(interval=10.0, timeout=5.0, failures=4, stall=120.0), False)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from concilium._errors import ServerError, UserError
from concilium.agents.ledger import supervise

from ._metrics import read_metrics
from ._process import ManagedProcess

Log = Callable[[str], None]

MAX_RESTARTS = 3  # per replica, within WINDOW seconds
WINDOW = 600.0
LIVENESS_VAR = "CONCILIUM_LIVENESS"


@dataclass(frozen=True)
class Liveness:
    """How a hung replica is found: every ``interval`` seconds its health URL is asked,
    and ``failures`` probes in a row with no answer within ``timeout`` seconds mean it
    hangs (about ``failures * (interval + timeout)`` seconds from the hang to the kill).
    An engine (``Supervisor(progress=True)``) whose ``/metrics`` show requests running
    or waiting and no token counted for ``stall`` seconds hangs too: its engine core stopped while
    its API server still answers ``/health``. ``failures=0`` turns the probe off,
    ``stall=0`` only the stall check."""

    interval: float = 5.0
    timeout: float = 5.0
    failures: int = 3
    stall: float = 120.0

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    @classmethod
    def parse(cls, text: str, source: str = LIVENESS_VAR) -> Liveness:
        """``"INTERVAL,TIMEOUT,FAILURES[,STALL]"`` in seconds, seconds, probes and
        seconds (``STALL`` 0: no stall check), or ``"off"``."""
        d = cls()
        fix = (
            f"set {source} to INTERVAL,TIMEOUT,FAILURES[,STALL] (seconds, seconds, probes in "
            f"a row, seconds; default {d.interval:g},{d.timeout:g},{d.failures},{d.stall:g}) or to off"
        )
        if text.strip().lower() == "off":
            return cls(failures=0)
        parts = [part.strip() for part in text.split(",")]
        try:
            if len(parts) not in (3, 4):
                raise ValueError
            interval, timeout, failures = float(parts[0]), float(parts[1]), int(parts[2])
            stall = float(parts[3]) if len(parts) == 4 else d.stall
        except ValueError:
            raise UserError(f"{source}={text!r} is not three or four numbers: {fix}") from None
        for name, value in (("INTERVAL", interval), ("TIMEOUT", timeout)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{source}={text!r}: {name} must be above 0 seconds; {fix}")
        if failures < 1:
            raise UserError(f"{source}={text!r}: FAILURES must be 1 or more; {fix}")
        if not (math.isfinite(stall) and stall >= 0):
            raise UserError(f"{source}={text!r}: STALL must be 0 (off) or more seconds; {fix}")
        return cls(interval, timeout, failures, stall)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Liveness:
        """The probe ``CONCILIUM_LIVENESS`` asks for, or the default when it is unset."""
        text = (os.environ if environ is None else environ).get(LIVENESS_VAR, "").strip()
        return cls.parse(text) if text else cls()


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
        liveness: the hang probe (default: ``Liveness.from_env()``); it asks each
            process's ``health_url``, so a process without one is not probed.
        progress: the processes are engines (vLLM, or the simulated server) whose
            ``/metrics``, beside the health URL, count tokens: one with requests
            running or waiting and no token counted for ``liveness.stall`` seconds is
            hung.

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
        liveness: Liveness | None = None,
        progress: bool = False,
    ) -> None:
        self.processes = processes
        self.replica = replica
        self.urls = list(urls)
        self.max_restarts = max_restarts
        self.window = window
        self.notice = notice or _stderr
        self.liveness = liveness if liveness is not None else Liveness.from_env()
        self.restarts = [0] * len(processes)  # in all (a test can count them)
        self._recent = [collections.deque[float]() for _ in processes]
        self._up = [asyncio.Event() for _ in processes]
        self._given_up = [False] * len(processes)
        self._watchers: list[asyncio.Task[None]] = []
        self._registered = contextlib.ExitStack()
        # what the probes know, for calls waiting on a verdict: each change sets and
        # replaces _news[i] (a broadcast); a restart bumps _generation[i]
        self._news = [asyncio.Event() for _ in processes]
        self._generation = [0] * len(processes)
        self._probed = [0] * len(processes)  # probes answered or not, so far
        self._answering = [True] * len(processes)  # the last probe's outcome
        self._poke = [asyncio.Event() for _ in processes]  # probe now, not at the interval
        self._hung: list[str | None] = [None] * len(processes)  # why the prober killed it
        self.progress = progress and self.liveness.stall > 0
        # the last token count seen: (process, count, since when it has not moved)
        self._counted: list[tuple[ManagedProcess, float, float] | None] = [None] * len(processes)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it runs on

    async def __aenter__(self) -> Supervisor:
        self._loop = asyncio.get_running_loop()
        for up in self._up:
            up.set()
        waits = {url: functools.partial(self._back, i) for i, url in enumerate(self.urls)}
        self._registered.enter_context(supervise(waits))
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(len(self.processes))]
        if self.liveness.enabled:
            # a fresh connection per probe: a pooled one could outlive the server it met
            connector = aiohttp.TCPConnector(force_close=True)
            self._session = aiohttp.ClientSession(connector=connector)
            self._watchers += [
                asyncio.create_task(self._probe_loop(i)) for i in range(len(self.processes))
            ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for i, up in enumerate(self._up):  # calls still waiting stop waiting: no restart
            self._given_up[i] = True
            up.set()
            self._announce(i)
        self._registered.close()
        if self._session is not None:
            await self._session.close()

    def _announce(self, i: int) -> None:
        """Wake every call waiting on replica ``i``'s news (they look again)."""
        news, self._news[i] = self._news[i], asyncio.Event()
        news.set()

    def _health_url(self, i: int) -> str | None:
        proc = self.processes[i]
        if not self.liveness.enabled or proc.health_url is None:
            return None
        return proc.health_url.format(url=(proc.url or "").removesuffix("/v1"))

    async def _answers(self, url: str) -> bool:
        """Whether ``url`` gives any HTTP answer within the probe's timeout."""
        assert self._session is not None
        try:
            timeout = aiohttp.ClientTimeout(total=self.liveness.timeout)
            async with self._session.get(url, timeout=timeout) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return False
        return True

    async def _back(self, i: int) -> bool:
        """For the ledger: wait while replica ``i`` is being restarted; whether it was.
        A replica that is up but does not answer its health URL is waited on until the
        probe decides: it answers again (``False``) or it was restarted (``True``).
        A call made on another event loop (a thread of its own) is not waited for: the
        supervisor's events and probe session belong to its own loop, so that call's
        retries are all it gets."""
        if self._given_up[i] or asyncio.get_running_loop() is not self._loop:
            return False
        if self.processes[i].returncode is not None:
            self._up[i].clear()  # it died, and its watcher has not seen it yet
        if self._up[i].is_set():
            url = self._health_url(i)
            if url is None or await self._answers(url):
                return False  # it is up and answers: the failure was something else
            generation, probed = self._generation[i], self._probed[i]
            self._poke[i].set()
            while not (
                self._given_up[i]
                or self._generation[i] != generation
                or (self._probed[i] > probed and self._answering[i])
            ):
                await self._news[i].wait()
            return not self._given_up[i] and self._generation[i] != generation
        await self._up[i].wait()
        return not self._given_up[i]

    async def _probe_loop(self, i: int) -> None:
        """Ask replica ``i``'s health URL every interval; after ``failures`` probes in a
        row with no answer, kill its process group (its watcher restarts it). Calls that
        fail poke the probe to ask at once; a miss counts once per interval, so poked
        probes cannot make a verdict sooner, and a process that has ended (it refused
        the probes by dying) is left to its watcher."""
        live = self.liveness
        missed, last_miss = 0, 0.0
        while True:
            await self._up[i].wait()
            proc = self.processes[i]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke[i].wait(), live.interval)
            self._poke[i].clear()
            url = self._health_url(i)
            if url is None or self.processes[i] is not proc or proc.returncode is not None:
                missed = 0  # restarted meanwhile, or it has no health URL: nothing to judge
                continue
            answered = await self._answers(url)
            if self.processes[i] is not proc or proc.returncode is not None:
                missed = 0
                continue
            now = time.monotonic()
            if answered:
                missed = 0
            elif missed == 0 or now - last_miss >= live.interval:
                missed, last_miss = missed + 1, now
            self._probed[i] += 1
            self._answering[i] = answered
            self._announce(i)
            if missed >= live.failures and proc.ended():
                missed = 0  # it died, so it refused the probes: its watcher says so
            elif missed >= live.failures:
                self._hung[i] = (
                    f"{proc.name} hung: {url} gave no answer to {missed} probes in a row "
                    f"({live.timeout:g} s each, every {live.interval:g} s), so it was killed "
                    "(SIGKILL to its process group)"
                )
                proc.kill()
                missed = 0
            elif answered and self.progress:
                stalled = await self._stalled(i, proc, url)
                if stalled and self.processes[i] is proc and proc.returncode is None:
                    self._hung[i] = stalled  # the watcher restarts it, saying why
                    proc.kill()

    async def _stalled(self, i: int, proc: ManagedProcess, health: str) -> str | None:
        """Why replica ``i`` is stalled, or ``None``: its ``/metrics`` show requests
        running or waiting and the same token count (prompt and generated) for
        ``stall`` seconds. No metrics (no answer, not 200) is no verdict: silence is
        the probe's."""
        assert self._session is not None
        url = health.rsplit("/", 1)[0] + "/metrics"
        try:
            timeout = aiohttp.ClientTimeout(total=self.liveness.timeout)
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                metrics = read_metrics(await resp.text())
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            return None
        running = sum(metrics.get(f"vllm:num_requests_{n}", 0.0) for n in ("running", "waiting"))
        count = sum(metrics.get(f"vllm:{n}_tokens_total", 0.0) for n in ("prompt", "generation"))
        now = time.monotonic()
        last = self._counted[i]
        if last is None or last[0] is not proc or last[1] != count or running <= 0:
            self._counted[i] = (proc, count, now)
            return None
        if now - last[2] < self.liveness.stall:
            return None
        return (
            f"{proc.name} stalled: {running:g} request(s) running or waiting and no token counted for "
            f"{now - last[2]:.0f} s ({url}; its /health still answered), so it was killed "
            "(SIGKILL to its process group)"
        )

    async def _watch(self, i: int) -> None:
        dead = self.processes[i]
        what, how = self._what(i, dead, await dead.exited())
        while True:
            self._up[i].clear()
            kept = dead.keep_log(f"{how}-{time.strftime('%Y%m%d-%H%M%S')}-pid{dead.pid}")
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
                dead, how = replacement, "died"
                what = f"{replacement.name} did not start ({replacement.failed})"
                continue
            self.processes[i] = dead = replacement
            self._generation[i] += 1
            self._answering[i] = True
            self._up[i].set()
            self._announce(i)
            what, how = self._what(i, dead, await dead.exited())

    def _what(self, i: int, dead: ManagedProcess, code: int) -> tuple[str, str]:
        """What happened to ``dead``, in words (the prober's reason if it killed it), and
        the word its kept log is named with ("hung" or "died")."""
        hung, self._hung[i] = self._hung[i], None
        return (hung, "hung") if hung else (f"{dead.name} died ({describe_exit(code)})", "died")

    def _give_up(self, i: int, line: str) -> None:
        self._given_up[i] = True
        self._up[i].set()
        self._announce(i)
        self.notice(line)
