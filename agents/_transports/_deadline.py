"""Deadlines for whole (non-streamed) replies, learned from the replies themselves.

A non-streamed reply's first byte is its last, so a read timeout cannot tell a hung
request from a long answer, and ``ModelSpec.timeout`` (120 s) is what a hang used
to cost. Instead, each replica (``api_base`` and model) keeps its pace: how long its
recent whole replies took, per request and per requested token (``max_tokens``),
and how many requests were in flight to it when they were sent. A request is given

    FACTOR x max(slowest recent reply, slowest recent seconds per token x max_tokens)
             x max(1, requests in flight now / requests in flight then)

seconds, at least ``FLOOR``, at most ``timeout``: a deadline scaled to its length
and to the load. Past it the request is abandoned (the server sees the connection
close and aborts it) and the ledger retries it, on another replica when one is
ready, at once. Each missed deadline doubles the next ones until a reply arrives
(Karn's rule, as TCP's retransmission timer), so a server that has slowed down for
real is waited for, not retried forever. "Recent" decays: every reply scales the
remembered figures by ``DECAY`` before taking the larger of them and its own.

A replica with no reply yet has no pace: its requests are bounded by ``timeout``
until its first reply, which then gives the requests already in flight their
deadline (a hung request among a fan-out's first calls is abandoned once its
siblings have answered). A request without ``max_tokens`` has no length bound and
keeps ``timeout``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

FACTOR = 4.0  # a deadline is this many times the slowest recent reply
FLOOR = 0.5  # seconds: the shortest deadline (event-loop stalls, scheduler noise)
DECAY = 0.99  # per reply: how fast a slow reply is forgotten (half-life ~70 replies)
MAX_DOUBLINGS = 6  # missed deadlines that double the next one (64x); timeout caps it
_MAX_KEYS = 4096

Key = tuple[str, str]  # (api_base, served model name)


@dataclass(slots=True)
class _Pace:
    seconds: float = 0.0  # the slowest recent reply
    per_token: float = 0.0  # the slowest recent seconds per requested token
    load: float = 1.0  # the most requests in flight when a recent reply was sent
    in_flight: int = 0
    misses: int = 0  # deadlines missed since the last reply
    replied: bool = False
    cold: set[Watch] = field(default_factory=set)  # sent before the first reply


class Watch:
    """One request's deadline: ``seconds`` from ``started`` (the transport makes it
    the request's whole timeout), or, sent before the replica's first reply, none
    yet: then ``timer`` is entered around the request and set when that reply comes
    (rare, so the common request pays for no timer of its own)."""

    __slots__ = (
        "load", "loop", "max_tokens", "misses", "pace", "seconds", "started", "timeout", "timer",
    )  # fmt: skip

    def __init__(self, pace: _Pace, max_tokens: int, timeout: float) -> None:
        self.pace = pace
        self.max_tokens = max_tokens
        self.timeout = timeout
        seconds = _seconds(pace, max_tokens, timeout)
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.load = pace.in_flight
        self.misses = pace.misses
        self.seconds = seconds  # None: only ``timeout`` bounds it (so far)
        self.timer = asyncio.timeout_at(None) if seconds is None else None


class Deadlines:
    """The pace of every replica this process has sent whole requests to.

    Example:
        >>> import asyncio
        >>> async def demo():
        ...     deadlines = Deadlines()
        ...     first = deadlines.watch(("http://h/v1", "m"), 32, timeout=120.0)
        ...     deadlines.done(first, seconds=0.2)
        ...     second = deadlines.watch(("http://h/v1", "m"), 32, timeout=120.0)
        ...     return first.seconds, round(second.seconds, 3)
        >>> asyncio.run(demo())
        (None, 0.8)
    """

    def __init__(self) -> None:
        self._paces: dict[Key, _Pace] = {}

    def watch(self, key: Key, max_tokens: int | None, timeout: float) -> Watch | None:
        """A deadline for a request of ``max_tokens`` about to be sent, or ``None``
        when it has none but ``timeout`` (no ``max_tokens``)."""
        if not max_tokens:
            return None
        pace = self._paces.get(key)
        if pace is None:
            if len(self._paces) >= _MAX_KEYS:
                self._paces.clear()
            pace = self._paces[key] = _Pace()
        pace.in_flight += 1
        watch = Watch(pace, max_tokens, timeout)
        if watch.seconds is None:
            pace.cold.add(watch)
        return watch

    def done(self, watch: Watch, seconds: float | None, *, missed: bool = False) -> None:
        """``watch``'s request ended, right after leaving its timer: with its whole
        reply after ``seconds`` (learn from it; the requests sent before the first
        reply get their deadline), ``missed`` its deadline (the next requests get
        twice as long, once per round of misses: requests sent together that all
        miss double it once), or otherwise (an error status, a lost connection)."""
        pace = watch.pace
        pace.in_flight -= 1
        pace.cold.discard(watch)
        if seconds is not None:
            pace.seconds = max(pace.seconds * DECAY, seconds)
            pace.per_token = max(pace.per_token * DECAY, seconds / watch.max_tokens)
            pace.load = max(pace.load * DECAY, watch.load, 1.0)
            pace.misses = 0
            if not pace.replied:
                pace.replied = True
                self._warm(pace, watch.loop)
        elif missed and watch.misses == pace.misses < MAX_DOUBLINGS:
            pace.misses += 1

    @staticmethod
    def _warm(pace: _Pace, loop: asyncio.AbstractEventLoop) -> None:
        # each of these is inside its timer: a request leaves the set (``done``) right
        # after it leaves its timer, with no await between
        for cold in list(pace.cold):
            if cold.loop is loop and cold.timer is not None:  # rescheduled on its own loop
                cold.seconds = _seconds(pace, cold.max_tokens, cold.timeout)
                cold.timer.reschedule(cold.started + (cold.seconds or 0.0))
                pace.cold.discard(cold)


def _seconds(pace: _Pace, max_tokens: int, timeout: float) -> float | None:
    if not pace.replied:
        return None
    guess = max(pace.seconds, pace.per_token * max_tokens)
    crowd = max(1.0, pace.in_flight / pace.load)
    seconds = max(FACTOR * guess * crowd, FLOOR) * 2**pace.misses
    # two significant digits: few distinct values, so the transport's timeouts are reused
    return min(float(f"{seconds:.2g}"), timeout)
