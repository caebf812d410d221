"""The call ledger: the one place every model call and every tool call goes through.

For each model call it checks the budget, looks the request up in the call record
(resume), picks a replica from the pool, sends it through the transport with retries
for retryable errors only, counts calls and tokens, records the response, emits the
``chat {model}`` span and progress events. Tool calls (``CallLedger.tool``) are
budgeted, recorded and replayed the same way, under ``execute_tool {name}`` spans.
A run installs its ledger in a context variable; agents used outside a run share a
default ledger without a budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry import trace as otel_trace

from concilium._errors import BudgetExceeded, ModelCallError
from concilium.tools import Tool, ToolError, ToolText

from ._budget import Budget, BudgetMeter, Hold
from ._endpoints import Endpoints
from ._model import ModelPool, ModelSpec, Replica, _Slot, pool_for
from ._record import CallRecord, NoRecord
from ._redact import redact
from ._sampling import Sampling
from ._supervised import restarted
from ._tracing import chat_span, record_error, server_attributes, tool_span, tracing
from ._transports import Transport, transport_for
from ._transports._base import OnToken, StreamsTokens, replay_tokens
from ._types import Completion, TokenLogprob, Usage, completion_from_openai

Event = dict[str, Any]
EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How a call that fails retryably (a timeout, 408/409/425/429/5xx, a lost
    connection) is tried again; see ``CallLedger._send_with_retries``.

    Attributes:
        attempts: requests one call may send in all, the first included.
        initial_wait: seconds (with jitter) before the first retry that goes back
            to a replica already tried; doubling per retry up to ``max_wait``. A
            retry that can go to another ready replica goes at once.
        max_wait: the longest backoff.
        max_retry_after: the longest wait a server's ``Retry-After`` may impose;
            a longer one is cut to this.

    Example:
        >>> policy = RetryPolicy()
        >>> policy.wait(1, retry_after=2.0), policy.wait(1, retry_after=3600.0)
        (2.0, 30.0)
    """

    attempts: int = 4
    initial_wait: float = 0.25
    max_wait: float = 8.0
    max_retry_after: float = 30.0

    def wait(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retry`` (from 1): the backoff, or the
        server's ``Retry-After`` (capped) when that is longer."""
        backoff = min(self.initial_wait * 2 ** (retry - 1), self.max_wait)
        backoff *= 0.5 + random.random() / 2  # jitter: [0.5, 1) of it, never past the cap
        if retry_after is None:
            return backoff
        return max(min(retry_after, self.max_retry_after), backoff)


def _timed_out(exc: ModelCallError) -> bool:
    """A read or total timeout: no status, yet a connection was made."""
    return exc.status is None and not exc.connection_failed and "timeout" in exc.detail.lower()


def _gave_up(exc: ModelCallError, attempts: int) -> ModelCallError:
    """The last error of a call that used all its attempts, saying so."""
    return ModelCallError(
        f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}; "
        f"the last one failed: {exc.detail}",
        model=exc.model,
        status=exc.status,
        retryable=exc.retryable,
        api_base=exc.api_base,
        connection_failed=exc.connection_failed,
        retry_after=exc.retry_after,
    )


def request_digest(model: str, body: Mapping[str, Any], key: str, run_id: str | None = None) -> str:
    """The record key of a call: model, body, the caller's call key and, for a run
    kept in a state file, its run id (so another run on the same file never replays
    this run's calls; without one, the key is what it always was)."""
    parts = [model, key, body] if run_id is None else [model, key, body, run_id]
    return hashlib.sha256(_DIGEST_JSON.encode(parts).encode()).hexdigest()


# json.dumps(sort_keys=True, separators=(",", ":"), default=str) built once: the same
# text (so the same record keys), without building an encoder on every call
_DIGEST_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def jsonable(value: Any) -> Any:
    """``value`` when JSON can hold it, else its text (what the call record keeps)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def tool_digest(
    name: str, arguments: Mapping[str, Any], scope: str, run_id: str | None = None
) -> str:
    """The record key of a tool call: its scope (the call key, or ``"side-effect"``
    for a tool with side effects), the tool, its arguments and the run id (as in
    ``request_digest``)."""
    parts = [scope, name, jsonable(arguments)] + ([] if run_id is None else [run_id])
    blob = json.dumps(parts, sort_keys=True, default=str)
    return "tool:" + hashlib.sha256(blob.encode()).hexdigest()


ToolEntry = dict[str, Any]  # {"result": ...} or {"error": "..."} in the call record


class CallLedger:
    """Counts, limits, records and traces model calls and tool calls.

    Attributes:
        calls: calls answered by a model (retries of one call count once).
        attempts: HTTP requests sent, retries included.
        replayed: calls answered from the record instead of a model.
        usage: tokens of the calls answered by a model.
        tool_calls: tool calls run (failed ones included).
        tools_replayed: tool calls answered from the record instead of the tool.
    """

    def __init__(
        self,
        *,
        budget: Budget | None = None,
        record: CallRecord | None = None,
        on_event: EventSink | None = None,
        retry: RetryPolicy = RetryPolicy(),
        run_id: str | None = None,
        endpoints: Endpoints | None = None,
        sampling: Sampling | None = None,
    ):
        self.budget = budget or Budget()
        self.sampling = sampling  # the run's overrides of every call's seed, temperature...
        self.endpoints = endpoints  # where a bound workflow's calls go (None: the spec's own)
        self.run_id = run_id  # part of every record key (see ``request_digest``)
        self.record = record if record is not None else CallRecord()
        self.on_event = on_event
        self.retry = retry
        self.calls = 0
        self.attempts = 0
        self.replayed = 0
        self.usage = Usage()
        self.tool_calls = 0
        self.tools_replayed = 0
        self.meter = BudgetMeter(self.budget)
        self._tools_running: dict[str, asyncio.Future[ToolEntry | None]] = {}

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def chat(
        self,
        spec: ModelSpec,
        body: Mapping[str, Any],
        *,
        agent: str,
        key: str,
        on_text: Callable[[str], None] | None = None,
        on_token: OnToken | None = None,
    ) -> tuple[Completion, bool]:
        """Run one chat call; returns the completion and whether it was replayed.

        ``on_text`` streams the reply: it gets each text delta as it arrives (the
        whole text at once for a replayed call or a transport that cannot stream).
        A streamed call is retried only until its first delta has gone out.
        ``on_token`` streams it too (``on_text`` may then be left out): it gets each
        token with its top-k logprobs as it arrives, and returning ``True`` aborts the
        request (``finish_reason`` ``"abort"``, the tokens so far counted as its
        usage); a replayed call, or a transport without ``streams_tokens``, passes
        the whole reply's tokens after the call.
        """
        if on_token is not None and on_text is None:
            on_text = _ignore_text
        if self.endpoints is not None:
            spec = self.endpoints.resolve(spec)
        if self.sampling is not None:  # before the digest: the record keys what was sent
            body = self.sampling.apply(body, key)
        digest = request_digest(spec.model, body, key, self.run_id)
        cached = self.record.get(digest)
        if cached is not None:
            self.replayed += 1
            self._emit({"type": "call_replayed", "agent": agent, "key": key})
            completion = completion_from_openai(cached)
            if on_text is not None:
                on_text(completion.choices[0].text)
            if on_token is not None:
                replay_tokens(completion, on_token)
            return completion, True

        body = dict(body)  # the meter may cap max_tokens; the digest is of the caller's body
        hold = self.meter.try_reserve(body, spec.model)
        if hold is None:  # its tokens do not fit beside the calls in flight: wait for them
            hold = await self.meter.reserve(body, spec.model)
        hold_token = _hold.set(hold)
        sink = self.on_event  # events are built only for a listener
        if sink is not None:
            sink({"type": "call_started", "agent": agent, "key": key, "model": spec.model})
        started = time.perf_counter()
        try:
            with chat_span(spec.served_name, spec.provider, body, agent) as span:
                try:
                    completion = await self._send_with_retries(spec, body, agent, on_text, on_token)
                except BaseException as exc:
                    record_error(span, exc)
                    raise
                if span.is_recording():
                    span.set_attributes(
                        {
                            "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
                            "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
                            "gen_ai.response.id": completion.id,
                            "gen_ai.response.model": completion.model,
                            "gen_ai.response.finish_reasons": [
                                c.finish_reason or "" for c in completion.choices
                            ],
                            **server_attributes(completion.replica),
                        }
                    )
        except BaseException as exc:
            self.meter.fail(
                hold, answered=isinstance(exc, ModelCallError) and exc.status is not None
            )
            self._emit(
                {"type": "call_failed", "agent": agent, "key": key, "error": redact(str(exc))}
            )
            raise
        finally:
            _hold.reset(hold_token)

        self.meter.settle(hold, completion.usage)
        self.calls += 1
        self.usage = self.usage + completion.usage
        self.record.put(digest, completion.to_json())
        if sink is not None:
            sink(
                {
                    "type": "call_finished",
                    "agent": agent,
                    "key": key,
                    "latency_s": time.perf_counter() - started,
                    "prompt_tokens": completion.usage.prompt_tokens,
                    "completion_tokens": completion.usage.completion_tokens,
                }
            )
        return completion, False

    async def _send(
        self,
        spec: ModelSpec,
        body: Mapping[str, Any],
        agent: str,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """Kept for callers of the old name: one call with retries and failover."""
        return await self._send_with_retries(spec, body, agent, on_text)

    async def _send_with_retries(
        self,
        spec: ModelSpec,
        body: Mapping[str, Any],
        agent: str,
        on_text: Callable[[str], None] | None = None,
        on_token: OnToken | None = None,
    ) -> Completion:
        """Send one call, trying again on a retryable failure (``RetryPolicy``).

        Each request picks a replica the call has not tried when one is ready
        (``ModelPool.pick``) and reports its outcome to the replica's circuit
        breaker. A retry that has such a replica goes at once (failover); one that
        must go back to a replica already tried waits the backoff, or as long as
        the server's ``Retry-After`` asked (capped), and after a timeout not at all
        (the timeout was the wait). A streamed call is retried only while none of
        its text has gone out. The last error says how many attempts were made.
        """
        headers = {"X-Concilium-Agent": agent}
        pool, transport = pool_for(spec), transport_for(spec)
        # one URL may be a router (vllm-router, llm-d): it gets the fan-out's key too
        affinity = _affinity(body) if spec.routing == "affinity" or pool.size == 1 else None
        if affinity is not None:
            headers[ROUTING_KEY_HEADER] = _routing_key(affinity)
        tried: list[Replica] = []
        relay = None if on_text is None else _Relay(on_text, on_token)
        # hedging (ModelSpec.hedge_after) races a second copy; a streamed call's text
        # goes out as it comes, so only whole replies are hedged
        hedge = spec.hedge_after if on_text is None and pool.size > 1 else None
        attempt = waits = 0
        while True:
            attempt += 1
            self.attempts += 1
            slot = pool.slot(affinity, tried)
            if hedge is not None and attempt < self.retry.attempts:
                replica, outcome, hedged = await self._hedged(
                    pool, transport, slot, hedge, spec, body, headers, affinity, tried, agent
                )
                attempt += hedged  # a call sends at most RetryPolicy.attempts requests
            else:
                replica, outcome = await self._request(
                    pool, transport, slot, spec, body, headers, relay,
                    on_token=None if relay is None or on_token is None else relay.token,
                )  # fmt: skip
            if isinstance(outcome, Completion):
                return outcome
            error = outcome
            if replica not in tried:
                tried.append(replica)
            if not error.retryable or (relay is not None and relay.streamed):
                raise error
            now = time.monotonic()
            failover = any(pool.ready(r, now) for r in pool.replicas if r not in tried)
            if not failover and await restarted(replica.api_base):
                attempt -= 1  # its server died and its supervisor restarted it: not counted
                continue
            if attempt >= self.retry.attempts:
                raise _gave_up(error, attempt)
            if failover:
                self._emit(
                    {"type": "call_failover", "agent": agent, "from": redact(replica.api_base)}
                )
                continue
            self._emit({"type": "call_retry", "agent": agent, "error": redact(str(error))})
            if not _timed_out(error):
                waits += 1
                await asyncio.sleep(self.retry.wait(waits, error.retry_after))

    async def _request(
        self,
        pool: ModelPool,
        transport: Transport,
        slot: _Slot,
        spec: ModelSpec,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: Callable[[str], None] | None,
        hold: Hold | None = None,
        *,
        on_token: OnToken | None = None,
    ) -> tuple[Replica, Completion | ModelCallError]:
        """One request on ``slot``'s replica, its outcome reported to the pool's
        breaker; a retryable or not ``ModelCallError`` is returned, not raised."""
        async with slot as replica:
            if hold is None:
                _mark_sent()  # from here a cancelled call counts against the budget
            else:
                hold.sent = True
            try:
                if on_text is None:
                    completion = await transport.chat(spec, replica.api_base, body, headers)
                elif on_token is not None and getattr(transport, "streams_tokens", False):
                    completion = await cast(StreamsTokens, transport).stream(
                        spec, replica.api_base, body, headers, on_text, on_token=on_token
                    )
                else:  # a transport that cannot stream passes the whole text once
                    completion = await transport.stream(
                        spec, replica.api_base, body, headers, on_text
                    )
                    if on_token is not None:
                        replay_tokens(completion, on_token)
            except ModelCallError as exc:
                if exc.retryable:
                    pool.failed(replica, exc.retry_after)
                else:
                    pool.succeeded(replica)  # it answered: a bad request is not a sick server
                if exc.connection_failed:
                    pool.mark_down(replica)
                return replica, exc
            pool.succeeded(replica)
            return replica, completion

    async def _hedged(
        self,
        pool: ModelPool,
        transport: Transport,
        slot: _Slot,
        after: float,
        spec: ModelSpec,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        affinity: str | None,
        tried: list[Replica],
        agent: str,
    ) -> tuple[Replica, Completion | ModelCallError, bool]:
        """A request on ``slot`` that, with no reply after ``after`` seconds, is sent
        a second time to another ready replica, when there is one and the budget has
        room for it (the copy reserves its own hold). The first reply wins and the
        other request is cancelled; when both fail, both replicas join ``tried`` and
        an error is returned. Returns the replica, the outcome and whether a copy
        was sent."""
        tasks = [
            asyncio.ensure_future(self._request(pool, transport, slot, spec, body, headers, None))
        ]
        extra: Hold | None = None
        copy: _Slot | None = None
        loser_answered = False
        try:
            done, _ = await asyncio.wait(tasks, timeout=after)
            if not done:
                exclude = [*tried, slot.replica]
                now = time.monotonic()
                if any(pool.ready(r, now) for r in pool.replicas if r not in exclude):
                    extra = self._hedge_hold(body, spec.model)
                if extra is not None:
                    copy = pool.slot(affinity, exclude)
                    self.attempts += 1
                    self._emit(
                        {
                            "type": "call_hedged",
                            "agent": agent,
                            "after_s": after,
                            "from": redact(slot.replica.api_base),
                            "to": redact(copy.replica.api_base),
                        }
                    )
                    span = otel_trace.get_current_span() if tracing() else None
                    if span is not None and span.is_recording():  # this call's chat span
                        span.set_attribute("concilium.hedged", True)
                    tasks.append(
                        asyncio.ensure_future(
                            self._request(
                                pool, transport, copy, spec, body, headers, None, hold=extra
                            )
                        )
                    )
            pending: set[asyncio.Future[tuple[Replica, Completion | ModelCallError]]] = set(tasks)
            failure: tuple[Replica, ModelCallError] | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: not isinstance(t.result()[1], Completion)):
                    replica, outcome = task.result()
                    if isinstance(outcome, Completion):
                        loser_answered = failure is not None and failure[1].status is not None
                        return replica, outcome, extra is not None
                    if failure is not None:
                        loser_answered = failure[1].status is not None
                    failure = (replica, outcome)
                    if extra is not None and replica not in tried:
                        tried.append(replica)
            assert failure is not None  # every task returns an outcome
            return failure[0], failure[1], extra is not None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for used in (slot, copy):
                if used is not None and used.probe:  # a task cancelled before its slot opened
                    used.replica.probing = False
            if extra is not None:  # the losing copy: charged as sent, at its worst case
                self.meter.fail(extra, answered=loser_answered)

    def _hedge_hold(self, body: Mapping[str, Any], model: str) -> Hold | None:
        """The budget of a hedge's second copy, or ``None`` when it does not fit now
        (then there is no hedge: the first request goes on alone)."""
        try:
            return self.meter.try_reserve(dict(body), model)
        except BudgetExceeded:
            return None

    async def tool(
        self,
        tool: Tool,
        arguments: Mapping[str, Any],
        *,
        key: str,
        call_id: str | None = None,
        agent: str | None = None,
    ) -> tuple[Any, bool]:
        """Run one tool call; returns its result and whether it was replayed.

        The result (or the ``ToolError``, which is what the caller showed the model)
        is recorded under ``key``, which must be unique in the run and stable across
        a resume, so a resumed run replays it instead of calling the tool again (a
        ``ToolText`` result is recorded with its value and replayed as one). A
        tool with ``side_effects`` is recorded under its arguments alone: it runs at
        most once per run with those arguments, whatever the key (a concurrent
        duplicate waits for the first call's result).

        Raises:
            ToolError: the tool failed (now or, replayed, in the recorded run).
            BudgetExceeded: ``Budget.max_tool_calls`` tool calls have been run.

        Example:
            >>> import asyncio
            >>> from concilium.tools import Tool
            >>> def double(x: int) -> int:
            ...     "Double x."
            ...     return 2 * x
            >>> ledger, tool = CallLedger(), Tool.from_function(double)
            >>> asyncio.run(ledger.tool(tool, {"x": 21}, key="d1"))
            (42, False)
            >>> asyncio.run(ledger.tool(tool, {"x": 21}, key="d1")), ledger.tool_calls
            ((42, True), 1)
        """
        digest = tool_digest(
            tool.name, arguments, "side-effect" if tool.side_effects else key, self.run_id
        )
        entry = self.record.get(digest)
        running = self._tools_running.get(digest) if entry is None else None
        if running is not None:
            entry = await asyncio.shield(running)  # None: it failed unrecorded; call it here
        if entry is not None:
            self.tools_replayed += 1
            self._tool_event(tool.name, key, agent, "replayed", 0.0, entry.get("error"))
            if "error" in entry:
                raise ToolError(str(entry["error"]))
            if "value" in entry:
                return ToolText(str(entry.get("result")), entry["value"]), True
            return entry.get("result"), True

        b = self.budget
        if b.max_tool_calls is not None and self.tool_calls >= b.max_tool_calls:
            raise BudgetExceeded("tool_calls", self.tool_calls, b.max_tool_calls)
        self.tool_calls += 1
        done: asyncio.Future[ToolEntry | None] = asyncio.get_running_loop().create_future()
        self._tools_running[digest] = done
        recorded: ToolEntry | None = None
        started = time.perf_counter()
        try:
            with tool_span(tool.name, tool.description, call_id) as span:
                try:
                    result = await tool(arguments)
                except ToolError as exc:
                    record_error(span, exc)
                    recorded = {"error": str(exc)}
                    self.record.put(digest, recorded)
                    self._tool_event(
                        tool.name, key, agent, "failed", time.perf_counter() - started, str(exc)
                    )
                    raise
            if isinstance(result, ToolText):  # the value too: code reads it on a replay
                recorded = {"result": str(result), "value": result.value}
            else:
                recorded = {"result": jsonable(result)}
            self.record.put(digest, recorded)
        except BaseException as exc:
            if recorded is None:  # cancelled, or an error that is not the tool's: not a call made
                self.tool_calls -= 1
                self._tool_event(
                    tool.name, key, agent, "failed", time.perf_counter() - started, repr(exc)
                )
            raise
        finally:
            del self._tools_running[digest]
            done.set_result(recorded)
        self._tool_event(tool.name, key, agent, "ok", time.perf_counter() - started, None)
        return result, False

    def _tool_event(
        self, tool: str, key: str, agent: str | None, status: str, seconds: float, error: object
    ) -> None:
        if self.on_event is None:
            return
        event: Event = {
            "type": "tool",
            "tool": tool,
            "key": key,
            "status": status,
            "seconds": round(seconds, 6),
        }
        if agent is not None:
            event["agent"] = agent
        if error is not None:
            event["error"] = str(error)
        self.on_event(event)


class _Relay:
    """Passes a streamed call's deltas (and tokens) on and remembers that one went
    out (then the call is not retried: its text has been seen)."""

    __slots__ = ("on_text", "on_token", "streamed")

    def __init__(self, on_text: Callable[[str], None], on_token: OnToken | None = None):
        self.on_text = on_text
        self.on_token = on_token
        self.streamed = False

    def __call__(self, delta: str) -> None:
        self.streamed = True
        self.on_text(delta)

    def token(self, token: TokenLogprob) -> bool | None:
        self.streamed = True
        return self.on_token(token) if self.on_token is not None else None


def _ignore_text(delta: str) -> None:
    """The ``on_text`` of a call streamed for its tokens only."""


# the header vllm-router's consistent_hash policy hashes on: calls sharing a first
# message carry the same key (docs/serving.md, "Routers")
ROUTING_KEY_HEADER = "X-Session-ID"


def _affinity(body: Mapping[str, Any]) -> str | None:
    """Calls that share their first message (a fan-out's prompt, a debate's question)
    share a replica, and so its prefix cache: the message's JSON, or, for the usual
    ``{"role": ..., "content": "text"}``, its role and text (no JSON to build)."""
    messages = body.get("messages") or ()
    if not messages:
        return None
    first = messages[0]
    if type(first) is dict and len(first) == 2:
        role, content = first.get("role"), first.get("content")
        if type(role) is str and type(content) is str:
            return f"{role}\n{content}"
    return json.dumps(first, sort_keys=True, default=str)


@functools.lru_cache(maxsize=4096)
def _routing_key(affinity: str) -> str:
    """The ``X-Session-ID`` of calls with this affinity: a short stable hash (a
    fan-out's calls share the string, whose hash Python keeps, so the lookup is cheap)."""
    return hashlib.blake2b(affinity.encode(), digest_size=8).hexdigest()


_hold: contextvars.ContextVar[Hold | None] = contextvars.ContextVar("concilium_hold", default=None)


def _mark_sent() -> None:
    """The current call's request goes out: cancelling it no longer frees its budget."""
    hold = _hold.get()
    if hold is not None:
        hold.sent = True


_default_ledger = CallLedger(record=NoRecord())
_current: contextvars.ContextVar[CallLedger | None] = contextvars.ContextVar(
    "concilium_ledger", default=None
)


def current_ledger() -> CallLedger:
    """The ledger of the run in progress, or the process-wide default one."""
    return _current.get() or _default_ledger


def use_ledger(ledger: CallLedger) -> contextvars.Token[CallLedger | None]:
    """Make ``ledger`` current for this task and the tasks it starts."""
    return _current.set(ledger)


def reset_ledger(token: contextvars.Token[CallLedger | None]) -> None:
    _current.reset(token)
