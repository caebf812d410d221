"""Model deployments: ``ModelSpec`` (what to call) and ``ModelPool`` (which replica).

A ``ModelSpec`` is a frozen value: a litellm model string, the replicas' ``api_base``
URLs, what the server can do, and a per-replica concurrency limit. Pools hold the
mutable part (in-flight counts, semaphores); they are bound to an event loop, so they
live in a per-loop registry (``pool_for``) rather than on the spec.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

from ._types import Completion

TransportName = Literal["auto", "direct", "litellm"]
Routing = Literal["least_loaded", "affinity", "round_robin"]

# litellm provider prefixes whose servers speak the OpenAI wire format; with an
# api_base these go over the direct aiohttp transport when transport="auto".
OPENAI_COMPATIBLE_PREFIXES = ("hosted_vllm/", "openai/", "sglang/", "llamacpp/", "vllm/")


class SendsChat(Protocol):
    """What ``ModelSpec(transport=...)`` takes besides a name: an object with the
    ``chat`` method of ``concilium.agents.Transport`` (a test double such as
    ``FakeModel``). With ``stream`` and ``streams`` too it is used as it is;
    otherwise a streamed call gets the whole text as one delta."""

    def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Awaitable[Completion]: ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a deployment supports. Patterns read these to pick a strategy."""

    n: bool = True  # one request may ask for n>1 samples
    logprobs: bool = True
    tools: bool = False
    structured_output: bool = False  # honours response_format json_schema
    # "completion": a base model, asked with a few-shot prompt over /v1/completions
    mode: Literal["chat", "completion"] = "chat"


@dataclass(frozen=True)
class ModelSpec:
    """A named model deployment.

    Args:
        model: litellm model string, e.g. ``"hosted_vllm/gemma-3-270m"``.
        api_base: one URL or several (replicas of the same model), e.g.
            ``"http://127.0.0.1:8000/v1"``.
        api_key: sent as a bearer token when given.
        capabilities: what the server supports (``n>1``, logprobs, ...).
        max_concurrency: requests in flight per replica; more wait their turn.
        transport: ``"auto"`` (direct for OpenAI-compatible URLs, else litellm),
            ``"direct"``, ``"litellm"``, or a ``Transport`` object (test doubles).
        timeout: seconds for one request, whole (120 s: generous, since a long
            generation on a CPU server legitimately takes minutes).
        ttft_timeout: for a streamed call, seconds to wait for its first event and
            then for each next one: what catches a hung server in seconds instead of
            waiting out ``timeout``. 30 s by default: a local server sends a streamed
            reply's first event after prefill (well under a second on a GPU, a few
            seconds on the embedded CPU engine). A non-streamed reply's first byte
            comes only when it is complete, so ``ttft_timeout`` does not apply there
            (it would cap the generation): the direct transport gives those calls a
            deadline learned from the replica's own replies and scaled to their
            ``max_tokens`` (docs/budgets.md), under ``timeout``, and ``hedge_after``
            can race a hung one. The direct transport honours it; litellm gets only
            ``timeout``.
        connect_timeout: seconds to open a connection (5 s: a local or LAN server
            connects in milliseconds, so 5 s means it is down).
        routing: how calls pick a replica: ``"least_loaded"`` (fewest in flight),
            ``"affinity"`` (calls sharing their first message go to the same replica,
            so they share its prefix cache, unless it is at its concurrency limit),
            or ``"round_robin"``. Under every mode a replica whose circuit breaker is
            open gets no calls (see ``ModelPool``), a retry prefers a replica the
            call has not tried, and a replica that refuses connections is skipped for
            ``DOWN_SECONDS``.
        load_metrics: also read each replica's vLLM ``/metrics`` (every
            ``METRICS_INTERVAL`` s): requests waiting there (from any client) count
            as load, and a replica whose KV cache is nearly full is avoided.
        max_response_bytes: the most bytes one reply may bring (a whole body, or a
            whole stream and each of its lines), counted after decompression; a
            larger reply fails with ``MalformedReplyError`` (direct transport).
        hedge_after: off (``None``) by default. Seconds after which a request that
            has no reply yet is sent a second time to another ready replica, when
            there is one; the first reply wins and the other request is cancelled.
            Each copy reserves its own budget and counts as a call; the ledger
            emits ``call_hedged``. Streamed calls are not hedged (their text goes
            out as it comes), and a non-streamed reply's first byte is its last,
            so set this above the usual whole-reply time.

    Example:
        >>> spec = ModelSpec("hosted_vllm/gemma", api_base="http://127.0.0.1:8000/v1")
        >>> spec.served_name
        'gemma'
    """

    model: str
    api_base: str | tuple[str, ...] | list[str] | None = None
    api_key: str | None = field(default=None, repr=False)
    capabilities: Capabilities = Capabilities()
    max_concurrency: int = 256
    transport: TransportName | SendsChat = "auto"
    timeout: float = 120.0
    routing: Routing = "least_loaded"
    load_metrics: bool = False
    ttft_timeout: float = 30.0
    connect_timeout: float = 5.0
    max_response_bytes: int = 16 * 2**20
    hedge_after: float | None = None

    def __post_init__(self) -> None:
        bases = self.api_base
        if bases is None:
            bases = ()
        elif isinstance(bases, str):
            bases = (bases,)
        object.__setattr__(self, "api_base", tuple(b.rstrip("/") for b in bases))
        if self.max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes must be >= 1024, got {self.max_response_bytes}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        for name in ("timeout", "ttft_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        hedge = self.hedge_after
        if hedge is not None and not (isinstance(hedge, (int, float)) and 0 < hedge < math.inf):
            raise ValueError(
                f"hedge_after must be None (off) or a finite number of seconds > 0, got {hedge!r}"
            )
        if self.routing not in ("least_loaded", "affinity", "round_robin"):
            raise ValueError(
                f"routing must be least_loaded, affinity or round_robin, got {self.routing!r}"
            )

    @property
    def replicas(self) -> tuple[str, ...]:
        return self.api_base  # type: ignore[return-value]

    @cached_property  # read several times on every call; a frozen spec cannot change it
    def served_name(self) -> str:
        """The model name the server knows (the litellm provider prefix removed)."""
        for prefix in OPENAI_COMPATIBLE_PREFIXES:
            if self.model.startswith(prefix):
                return self.model[len(prefix) :]
        return self.model

    @property
    def provider(self) -> str:
        """The provider half of the model string (``openai`` when there is none)."""
        head, sep, _ = self.model.partition("/")
        return head if sep else "openai"

    @cached_property  # read on every call by transport_for; a frozen spec cannot change it
    def openai_compatible(self) -> bool:
        """Served at a URL by a server that speaks the OpenAI wire format (vLLM,
        SGLang, llama.cpp, the simulated server); ``transport="auto"`` then takes
        the direct transport."""
        return bool(self.replicas) and self.model.startswith(OPENAI_COMPATIBLE_PREFIXES)

    def uses_direct_transport(self) -> bool:
        """Kept for compatibility; ``transport_for(spec)`` is what decides."""
        return self.transport == "direct" or (self.transport == "auto" and self.openai_compatible)

    def with_api_base(self, api_base: str | Sequence[str]) -> ModelSpec:
        """The same deployment served elsewhere (the CLI's ``--backend URL``)."""
        from dataclasses import replace

        model = self.model if "/" in self.model else f"openai/{self.model}"
        return replace(self, model=model, api_base=api_base)


DOWN_SECONDS = 10.0  # a replica that refused a connection is skipped this long
METRICS_INTERVAL = 0.5
KV_FULL = 0.95
BREAKER_FAILURES = 3  # consecutive retryable failures (timeouts included) that open a breaker
BREAKER_COOLDOWN = 5.0  # seconds an open breaker waits before its half-open probe
BREAKER_MAX_COOLDOWN = 60.0  # the cool-down doubles after each failed probe, up to this


class Replica:
    """One server of a pool: its URL, a concurrency gate, counters and a circuit breaker.

    The breaker is closed while ``failures`` (consecutive retryable failures) is
    under the pool's ``breaker_failures``; then it is open until ``open_until``,
    after which one call at a time (the half-open probe) may go: a success closes
    it, a failure opens it again for twice as long.
    """

    __slots__ = (
        "_gate", "api_base", "down_until", "failures", "in_flight", "kv_usage",
        "open_until", "probing", "reopened", "sent", "waiting",
    )  # fmt: skip

    def __init__(self, api_base: str | None, limit: int):
        self.api_base = api_base
        self.in_flight = 0  # holding or waiting for a slot
        self.sent = 0
        self.down_until = 0.0  # refused a connection, or asked to wait (Retry-After)
        self.waiting = 0.0  # vllm:num_requests_waiting, when load_metrics is on
        self.kv_usage = 0.0  # vllm:kv_cache_usage_perc
        self.failures = 0
        self.open_until = 0.0
        self.reopened = 0  # failed probes since the breaker last closed
        self.probing = False
        self._gate = _Gate(limit)

    def up(self, now: float) -> bool:
        return now >= self.down_until

    def load(self, limit: int) -> float:
        return self.in_flight + self.waiting + (limit if self.kv_usage >= KV_FULL else 0)

    def breaker(self, threshold: int, now: float) -> Literal["closed", "open", "half_open"]:
        """The breaker's state: ``half_open`` once an open breaker's cool-down is over."""
        if self.failures < threshold:
            return "closed"
        return "open" if now < self.open_until or self.probing else "half_open"


def _rank(key: str, replica: Replica) -> bytes:
    return hashlib.blake2b(f"{key}|{replica.api_base}".encode(), digest_size=8).digest()


class ModelPool:
    """Routes each call of one ``ModelSpec`` to a replica (see ``ModelSpec.routing``).

    Use ``async with pool.slot(affinity, exclude) as replica:`` around a request; the
    slot both limits concurrency per replica (callers wait: backpressure, not 429s)
    and counts load for routing. Report each request's outcome with ``succeeded``
    or ``failed``: that drives the replicas' circuit breakers, which every routing
    mode respects (``breaker_failures`` consecutive retryable failures open one for
    ``breaker_cooldown`` seconds; tests may lower both on a pool).
    """

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        bases: tuple[str | None, ...] = spec.replicas or (None,)
        self.replicas = [Replica(b, spec.max_concurrency) for b in bases]
        self.breaker_failures = BREAKER_FAILURES
        self.breaker_cooldown = BREAKER_COOLDOWN
        self._next = 0
        self._poller: asyncio.Task[None] | None = None

    def ready(self, replica: Replica, now: float) -> bool:
        """Whether ``replica`` may take a call now: up, and its breaker not open."""
        return replica.up(now) and replica.breaker(self.breaker_failures, now) != "open"

    def pick(self, affinity: str | None = None, exclude: Collection[Replica] = ()) -> Replica:
        """The replica for the next request.

        Only ready replicas are candidates (``ready``), those not in ``exclude``
        (the ones this call already tried) first. When none is ready, the one that
        will be soonest is used: with nothing healthy to prefer, a call still goes.
        """
        if len(self.replicas) == 1:  # every rule below picks it (the common case)
            return self.replicas[0]
        now = time.monotonic()
        fresh = [r for r in self.replicas if r not in exclude]
        live = [r for r in fresh if self.ready(r, now)] or [
            r for r in self.replicas if self.ready(r, now)
        ]
        if not live:
            return min(fresh or self.replicas, key=lambda r: max(r.open_until, r.down_until))
        if len(live) == 1:
            return live[0]
        if self.spec.routing == "round_robin":
            self._next += 1
            return live[self._next % len(live)]
        if self.spec.routing == "affinity" and affinity is not None:
            # rendezvous hashing: the same key keeps its replica while that one is up
            home = max(live, key=lambda r: _rank(affinity, r))
            if (
                home.in_flight < self.spec.max_concurrency
                and home.waiting == 0
                and home.kv_usage < KV_FULL
            ):
                return home
        limit = self.spec.max_concurrency
        best = live[0]
        for r in live[1:]:
            if r.load(limit) < best.load(limit):
                best = r
        return best

    def slot(self, affinity: str | None = None, exclude: Collection[Replica] = ()) -> _Slot:
        if self.spec.load_metrics and self._poller is None and len(self.replicas) > 1:
            self._poller = asyncio.ensure_future(self._poll_metrics())
        replica = self.pick(affinity, exclude)
        probe = (
            replica.failures >= self.breaker_failures  # a closed breaker (the usual) needs no clock
            and replica.breaker(self.breaker_failures, time.monotonic()) == "half_open"
        )
        if probe:
            replica.probing = True  # the one call that decides; the others keep away
        return _Slot(replica, probe)

    def succeeded(self, replica: Replica) -> None:
        """A request got an answer (any answer that is not a retryable failure)."""
        replica.failures = 0
        replica.reopened = 0
        replica.open_until = 0.0

    def failed(self, replica: Replica, retry_after: float | None = None) -> None:
        """A request failed retryably (5xx, 429, timeout, lost connection)."""
        now = time.monotonic()
        replica.failures += 1
        if retry_after:
            replica.down_until = max(replica.down_until, now + retry_after)
        if replica.failures >= self.breaker_failures:
            if replica.probing:  # the half-open probe failed: open again, for longer
                replica.reopened += 1
            cooldown = min(self.breaker_cooldown * 2**replica.reopened, BREAKER_MAX_COOLDOWN)
            replica.open_until = now + cooldown

    async def _poll_metrics(self) -> None:
        """Keep each replica's waiting count and KV-cache use from its /metrics."""
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                for r in self.replicas:
                    if r.api_base is None:
                        continue
                    try:
                        async with session.get(r.api_base.removesuffix("/v1") + "/metrics") as resp:
                            text = await resp.text() if resp.status == 200 else ""
                    except (TimeoutError, aiohttp.ClientError):
                        continue
                    r.waiting = _metric(text, "vllm:num_requests_waiting", sum)
                    r.kv_usage = _metric(text, "vllm:kv_cache_usage_perc", max)
                await asyncio.sleep(METRICS_INTERVAL)

    def mark_down(self, replica: Replica, seconds: float = DOWN_SECONDS) -> None:
        replica.down_until = time.monotonic() + seconds

    @property
    def size(self) -> int:
        return len(self.replicas)


def _metric(text: str, name: str, combine: Callable[[list[float]], float]) -> float:
    """One Prometheus metric over its label sets (0 when absent).

    Example:
        >>> text = (
        ...     'vllm:num_requests_waiting{m="a"} 2'
        ...     + chr(10)
        ...     + 'vllm:num_requests_waiting{m="b"} 3'
        ... )
        >>> _metric(text, "vllm:num_requests_waiting", sum)
        5.0
    """
    values = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            try:
                values.append(float(line.rsplit(" ", 1)[1]))
            except (ValueError, IndexError):
                continue
    return float(combine(values)) if values else 0.0


class _Gate:
    """A counting semaphore (first come, first served) whose uncontended acquire is
    one check, not a coroutine: ``asyncio.Semaphore`` costs ~5 Python calls a request
    at the fan-outs concilium exists for. A released slot goes straight to the first
    waiter."""

    __slots__ = ("free", "waiters")

    def __init__(self, limit: int):
        self.free = limit
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: hand it on
            elif waiter in self.waiters:  # (release may have dropped it already)
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _Slot:
    __slots__ = ("probe", "replica")

    def __init__(self, replica: Replica, probe: bool = False):
        self.replica = replica
        self.probe = probe

    async def __aenter__(self) -> Replica:
        r = self.replica
        r.in_flight += 1
        if r._gate.try_acquire():
            r.sent += 1
            return r
        try:
            await r._gate.acquire()
        except BaseException:
            r.in_flight -= 1
            if self.probe:
                r.probing = False
            raise
        r.sent += 1
        return r

    async def __aexit__(self, *exc: object) -> None:
        self.replica._gate.release()
        self.replica.in_flight -= 1
        if self.probe:  # decided (succeeded/failed was called) or cancelled: let another probe
            self.replica.probing = False


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ModelSpec, ModelPool]] = (
    weakref.WeakKeyDictionary()
)


def pool_for(spec: ModelSpec) -> ModelPool:
    """The pool of ``spec`` on the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    last = _last_pool[0]
    if last is not None and last[1] is spec and last[0]() is loop:  # a fan-out: the same spec
        return last[2]
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
    pool = pools.get(spec)
    if pool is None:
        pool = pools[spec] = ModelPool(spec)
    _last_pool[0] = (weakref.ref(loop), spec, pool)
    return pool


# The pool pool_for found last, by identity: hashing a ModelSpec (all its fields) to
# find its pool again was most of pool_for's cost on every call. The loop is held
# weakly, as in _pools.
_last_pool: list[
    tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], ModelSpec, ModelPool] | None
] = [None]
