"""A server subprocess with a readiness deadline: start, wait until ready, stop.

Readiness is a line on its output (the URL it bound) and then ``/health`` answering
200, polled until a deadline. If the process exits or the deadline passes, the error
carries the last lines it printed, so a failed start says why instead of hanging.

A managed process does not outlive the process that started it: on Linux the kernel
sends it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), however the parent died
(SIGKILL, an OOM kill, a crash). It runs in a session of its own, so the parent's
process group does not reach it; without this, an engine (~6 GB) whose front-end was
killed stays up for ever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from concilium._errors import ServerError


class _NotReady(Exception):
    """The health URL did not answer 200 yet (polled again until the deadline)."""


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _leash() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGTERM the child when the thread that
    started it ends: its process dying, or a worker thread that ran the event loop
    ending (asyncio's transport would kill the child then anyway). Linux only;
    elsewhere ``None``, no leash."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    parent = os.getpid()

    def tie() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the leash was on
            os.kill(os.getpid(), signal.SIGTERM)

    return tie


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's subprocess protocol that also sets ``exited`` the moment the process
    exits, whoever still holds its output open."""

    def __init__(self, exited: asyncio.Event, limit: int, loop: asyncio.AbstractEventLoop):
        super().__init__(limit=limit, loop=loop)
        self.exited = exited

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class ManagedProcess:
    """One server process.

    Args:
        name: what to call it in messages ("simulated server", "vLLM replica 0").
        argv: the command.
        env: extra environment variables.
        ready_pattern: regex a line must match before polling health; its group
            ``url`` (if any) becomes ``self.url``.
        health_url: polled until it answers 200 (may use ``{url}``).
        deadline: seconds to become ready.
        log_path: a file that receives every output line (replaced at each start;
            ``keep_log`` moves it aside first), so a server that misbehaves after it
            started can still be diagnosed.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready_pattern: str | None = None,
        health_url: str | None = None,
        deadline: float = 60.0,
        keep_lines: int = 40,
        log_path: Path | None = None,
    ):
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.ready_pattern = re.compile(ready_pattern) if ready_pattern else None
        self.health_url = health_url
        self.deadline = deadline
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.log_path = log_path
        self.url: str | None = None
        self.failed: str | None = None  # why it failed to start, in a few words
        self.proc: asyncio.subprocess.Process | None = None
        self._ready_line = asyncio.Event()
        self._exited = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def last_output(self) -> str:
        return "\n".join(f"    {line}" for line in self.lines) or "    (it printed nothing)"

    def _failure(self, what: str, fix: str) -> ServerError:
        self.failed = what
        where = f" (all of it: {self.log_path})" if self.log_path else ""
        return ServerError(
            f"{self.name} {what}. Its last output lines{where}:\n{self.last_output()}\n{fix}"
        )

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.ExitStack() as stack:
            log = None
            if self.log_path is not None:
                with contextlib.suppress(OSError):  # a log is a help, never a reason to fail
                    self.log_path.parent.mkdir(parents=True, exist_ok=True)
                    log = stack.enter_context(self.log_path.open("w", encoding="utf-8"))
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if log is not None:
                    log.write(f"{line}\n")
                    log.flush()
                self._match_ready(line)

    def _match_ready(self, line: str) -> None:
        if self.ready_pattern and not self._ready_line.is_set():
            match = self.ready_pattern.search(line)
            if match:
                self.url = match.groupdict().get("url", self.url)
                self._ready_line.set()

    async def start(self) -> ManagedProcess:
        try:
            # asyncio.create_subprocess_exec, with a protocol that says when it exits
            loop = asyncio.get_running_loop()
            self._exited = asyncio.Event()
            transport, protocol = await loop.subprocess_exec(
                functools.partial(_Protocol, self._exited, limit=2**16, loop=loop),
                *self.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # signals to the group reach its children
                preexec_fn=_leash(),  # and it ends when this process does
            )
            self.proc = asyncio.subprocess.Process(transport, protocol, loop)
        except OSError as exc:
            self.failed = f"{self.argv[0]}: {exc}"
            raise ServerError(f"{self.name} could not start ({self.failed})") from exc
        self._reader = asyncio.create_task(self._read())
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        stop_at = time.monotonic() + self.deadline
        fix = "Check the command and the messages above; the deadline is deadline=... seconds."
        if self.ready_pattern is not None:
            waiter = asyncio.ensure_future(self._ready_line.wait())
            exited = asyncio.ensure_future(self.proc.wait())
            done, _ = await asyncio.wait(
                {waiter, exited}, timeout=self.deadline, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if waiter not in done:
                exited.cancel()
                if self.proc.returncode is not None:
                    await self._drain()
                    raise self._failure(
                        f"exited with code {self.proc.returncode} before it was ready", fix
                    )
                raise self._failure(f"printed no ready line within {self.deadline:g} s", fix)
            exited.cancel()
        if self.health_url is None:
            return
        url = self.health_url.format(url=(self.url or "").removesuffix("/v1"))
        # poll every 0.1 s until 200, an exit, or the deadline (what is left of it)
        polling = AsyncRetrying(
            stop=stop_after_delay(max(0.0, stop_at - time.monotonic())),
            wait=wait_fixed(0.1),
            retry=retry_if_exception_type(_NotReady),
            reraise=True,
        )
        async with aiohttp.ClientSession() as session:
            try:
                async for attempt in polling:
                    with attempt:
                        await self._probe(session, url, fix)
            except _NotReady:
                raise self._failure(
                    f"did not answer {url} within {self.deadline:g} s", fix
                ) from None

    async def _probe(self, session: aiohttp.ClientSession, url: str, fix: str) -> None:
        """Return when ``url`` answers 200; raise ``_NotReady`` to be polled again, or the
        failure (not retried) when the process has exited."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            await self._drain()
            raise self._failure(f"exited with code {self.proc.returncode} while starting", fix)
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
        raise _NotReady(url)

    async def _drain(self) -> None:
        """Let the reader take the lines an exited process left in the pipe."""
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)

    async def exited(self) -> int:
        """Wait until the process exits, end what it left in its process group, read
        its last lines, and return its exit code. (asyncio's ``wait()`` also waits
        until the output pipe closes, which a child it left, such as vLLM's engine
        core, keeps open for ever.)"""
        assert self.proc is not None
        await self._exited.wait()
        self.kill()
        await self._drain()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def ended(self) -> bool:
        """Whether the process has exited, even before asyncio has noticed (on Linux a
        dead process not yet reaped is a zombie, state Z, in ``/proc``)."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc is not None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except FileNotFoundError:
            return Path("/proc/self").exists()  # reaped just now (no /proc: cannot tell)
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "Z"  # its name, in (), may hold spaces

    def keep_log(self, tag: str) -> Path | None:
        """Move the log aside to ``<name>-<tag>.log`` (a next start writes ``log_path``
        anew) and return where it went: ``log_path`` itself if it could not move."""
        if self.log_path is None:
            return None
        kept = self.log_path.with_name(f"{self.log_path.stem}-{tag}{self.log_path.suffix}")
        try:
            self.log_path.rename(kept)  # the reader, if still writing, follows the file
        except OSError:
            return self.log_path
        return kept

    def kill(self) -> None:
        """Kill the process and its group at once (tests use this to simulate a crash;
        after a crash it ends what the dead process left, e.g. vLLM's engine core)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``grace`` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> ManagedProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
