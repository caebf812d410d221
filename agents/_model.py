"""Model deployments: ``ModelSpec`` (what to call) and ``ModelPool`` (which replica).

A ``ModelSpec`` is a frozen value: a litellm model string, the replicas' ``api_base``
URLs, what the server can do, and a per-replica concurrency limit. Pools hold the
mutable part (in-flight counts, semaphores); they are bound to an event loop, so they
live in a per-loop registry (``pool_for``) rather than on the spec.
"""

from __future__ import annotations

import asyncio
import hashlib
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
        timeout: seconds for one request.
        routing: how calls pick a replica: ``"least_loaded"`` (fewest in flight),
            ``"affinity"`` (calls sharing their first message go to the same replica,
            so they share its prefix cache, unless it is at its concurrency limit),
            or ``"round_robin"``. A replica that refuses connections is skipped for
            ``DOWN_SECONDS`` and the call goes to another.
        load_metrics: also read each replica's vLLM ``/metrics`` (every
            ``METRICS_INTERVAL`` s): requests waiting there (from any client) count
            as load, and a replica whose KV cache is nearly full is avoided.

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

    def __post_init__(self) -> None:
        bases = self.api_base
        if bases is None:
            bases = ()
        elif isinstance(bases, str):
            bases = (bases,)
        object.__setattr__(self, "api_base", tuple(b.rstrip("/") for b in bases))
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.routing not in ("least_loaded", "affinity", "round_robin"):
            raise ValueError(
                f"routing must be least_loaded, affinity or round_robin, got {self.routing!r}"
            )

    @property
    def replicas(self) -> tuple[str, ...]:
        return self.api_base  # type: ignore[return-value]

    @property
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


class Replica:
    """One server of a pool: its URL, a concurrency gate and counters."""

    __slots__ = ("_gate", "api_base", "down_until", "in_flight", "kv_usage", "sent", "waiting")

    def __init__(self, api_base: str | None, limit: int):
        self.api_base = api_base
        self.in_flight = 0  # holding or waiting for a slot
        self.sent = 0
        self.down_until = 0.0
        self.waiting = 0.0  # vllm:num_requests_waiting, when load_metrics is on
        self.kv_usage = 0.0  # vllm:kv_cache_usage_perc
        self._gate = asyncio.Semaphore(limit)

    def up(self, now: float) -> bool:
        return now >= self.down_until

    def load(self, limit: int) -> float:
        return self.in_flight + self.waiting + (limit if self.kv_usage >= KV_FULL else 0)


def _rank(key: str, replica: Replica) -> bytes:
    return hashlib.blake2b(f"{key}|{replica.api_base}".encode(), digest_size=8).digest()


class ModelPool:
    """Routes each call of one ``ModelSpec`` to a replica (see ``ModelSpec.routing``).

    Use ``async with pool.slot(affinity) as replica:`` around a request; the slot
    both limits concurrency per replica (callers wait: backpressure, not 429s) and
    counts load for routing.
    """

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        bases: tuple[str | None, ...] = spec.replicas or (None,)
        self.replicas = [Replica(b, spec.max_concurrency) for b in bases]
        self._next = 0
        self._poller: asyncio.Task[None] | None = None

    def pick(self, affinity: str | None = None, exclude: Collection[Replica] = ()) -> Replica:
        now = time.monotonic()
        candidates = [r for r in self.replicas if r not in exclude] or self.replicas
        live = [r for r in candidates if r.up(now)] or candidates
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
        return _Slot(self.pick(affinity, exclude))

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


class _Slot:
    __slots__ = ("replica",)

    def __init__(self, replica: Replica):
        self.replica = replica

    async def __aenter__(self) -> Replica:
        r = self.replica
        r.in_flight += 1
        try:
            await r._gate.acquire()
        except BaseException:
            r.in_flight -= 1
            raise
        r.sent += 1
        return r

    async def __aexit__(self, *exc: object) -> None:
        self.replica._gate.release()
        self.replica.in_flight -= 1


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ModelSpec, ModelPool]] = (
    weakref.WeakKeyDictionary()
)


def pool_for(spec: ModelSpec) -> ModelPool:
    """The pool of ``spec`` on the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
    pool = pools.get(spec)
    if pool is None:
        pool = pools[spec] = ModelPool(spec)
    return pool
