"""Budgets that hold under any fan-out: reserve a call's worst case before it is
sent, settle to its real usage when it completes.

The ledger asks ``BudgetMeter.reserve`` before each model request. A reservation
holds the request's calls (1, or ``n`` with ``Budget.count_samples``) and its worst
case in tokens: a bound on the prompt plus ``max_tokens`` for each of the ``n``
samples. A request without ``max_tokens`` under a token budget is given one: it
holds every token still free and its ``max_tokens`` is capped to that (so such
calls run one at a time under a token budget; give agents ``max_tokens`` to let
them run side by side). The check and the reservation happen with no ``await``
between them, so concurrent branches cannot both take the last tokens.

A request whose calls do not fit beside the calls in flight raises
``BudgetExceeded`` before it is sent (a call in flight is as good as spent). One
whose tokens do not fit beside them waits for them to settle, since a worst case
is rarely spent; it raises only when it cannot fit even if they spend nothing more. When a call completes its hold is settled to the real usage and
the unused part is freed. A call that fails or is cancelled frees its hold only if
no request was sent; once sent it counts as a call, and its tokens (unknown: the
server may have generated them) count at their worst case, unless the server
answered with an error status. Replayed calls (resume) never reach the meter.

The prompt is reserved at a bound that a server's count cannot exceed
(``prompt_bound``): one token per UTF-8 byte of its text, plus ``PER_MESSAGE`` for
each message and ``PER_REQUEST`` for the request (a chat template's role markers,
BOS, generation prompt and default system text). A tokenizer's tokens each cover
at least one byte (byte-level BPE, SentencePiece with byte fallback, characters),
so however a server counts, and however wide the fan-out, the tokens it bills stay
within the budget. Real text runs 3-4 bytes a token, so the bound is loose: calls
side by side under a tight token budget wait for each other more than they would
with exact counts, and the run gets the same answers. Should a server ever count
more than the bound (an image given by URL, a template with a long hidden
preamble), later reservations for that model are scaled up by the largest ratio
seen.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from concilium._errors import BudgetExceeded

from ._types import Usage


@dataclass(frozen=True)
class Budget:
    """Limits for one run; a call that would exceed one raises ``BudgetExceeded``
    before it is sent.

    ``max_calls`` counts model requests (retries of one request count once), or
    samples with ``count_samples=True`` (an ``n=64`` request is then 64 calls);
    ``max_tokens`` counts prompt plus completion tokens, reserved at their worst
    case while a call is in flight; ``max_tool_calls`` counts tool calls. Calls
    replayed from the record (resume) count against none of them.

    Example:
        >>> Budget(max_calls=10, count_samples=True).count_samples
        True
    """

    max_calls: int | None = None
    max_tokens: int | None = None
    max_tool_calls: int | None = None
    count_samples: bool = False


PER_MESSAGE = 8
"""Tokens a chat template adds around each message: role markers and separators
(Gemma, Llama 3 and ChatML add 5)."""
PER_REQUEST = 32
"""Tokens a chat template adds once: BOS, the generation prompt, and the default
system text some templates insert (Llama 3.1's dates, Qwen 2.5's, about 25)."""


def _bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if value is None:
        return 0
    return len(json.dumps(value, default=str))  # ASCII: non-ASCII as escapes, longer still


def prompt_bound(body: Mapping[str, Any]) -> int:
    """Prompt tokens a server cannot exceed for ``body``: one per UTF-8 byte of each
    message (its text, name and tool calls), of the prompt and of the tools, plus
    ``PER_MESSAGE`` a message and ``PER_REQUEST``.

    Example:
        >>> prompt_bound({"messages": [{"role": "user", "content": "2 + 2?"}]})
        46
        >>> prompt_bound({"messages": [{"role": "user", "content": "Zürich"}]})  # ü: 2 bytes
        47
    """
    total = PER_REQUEST
    for m in body.get("messages") or ():
        if isinstance(m, Mapping):
            content = m.get("content")
            if isinstance(content, list):  # parts: a text part's text, any other as JSON
                parts: list[Any] = content
                total += sum(
                    _bytes(p.get("text")) if isinstance(p, Mapping) and p.get("type") == "text"
                    else _bytes(p)
                    for p in parts
                )  # fmt: skip
            else:
                total += _bytes(content)
            total += PER_MESSAGE + _bytes(m.get("name")) + _bytes(m.get("tool_calls"))
    if "prompt" in body:
        total += _bytes(body["prompt"])
    if body.get("tools"):
        total += _bytes(body["tools"])
    return total


@dataclass
class Hold:
    """What one request has reserved, and whether it reached a server."""

    calls: int
    tokens: int
    model: str = ""
    prompt_bound: int = 0
    sent: bool = False


class BudgetMeter:
    """Reserves, settles and releases the budget of one run's model calls.

    Example:
        >>> import asyncio
        >>> meter = BudgetMeter(Budget(max_tokens=100))
        >>> body = {"messages": [{"role": "user", "content": "2 + 2?"}], "max_tokens": 20}
        >>> hold = asyncio.run(meter.reserve(body, "m"))
        >>> hold.tokens, meter.reserved_tokens  # the prompt's bound, 46, and max_tokens
        (66, 66)
        >>> meter.settle(hold, Usage(3, 5))
        >>> meter.used_tokens, meter.reserved_tokens
        (8, 0)
    """

    def __init__(self, budget: Budget):
        self.budget = budget
        self.used_calls = 0
        self.used_tokens = 0
        self.reserved_calls = 0
        self.reserved_tokens = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._ratio: dict[str, float] = {}  # model -> counted prompt tokens over the bound

    async def reserve(self, body: dict[str, Any], model: str) -> Hold:
        """Reserve what ``body`` may cost, waiting for calls in flight to settle when
        its tokens do not fit beside them. A body without ``max_tokens`` under a
        token budget gets one (the tokens still free, split over its samples).

        Raises:
            BudgetExceeded: its calls do not fit beside the calls in flight, or its
                tokens cannot fit even if the calls in flight spend nothing more.
        """
        while True:
            hold = self._try_reserve(body, model)
            if hold is not None:
                return hold
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def try_reserve(self, body: dict[str, Any], model: str) -> Hold | None:
        """Reserve what ``body`` may cost now, or return ``None`` when it does not fit
        beside the calls in flight (no waiting); ``BudgetExceeded`` as ``reserve``."""
        return self._try_reserve(body, model)

    def _try_reserve(self, body: dict[str, Any], model: str) -> Hold | None:
        # Synchronous on purpose: the check and the reservation are one step of the loop.
        b = self.budget
        n = int(body.get("n") or 1)
        calls = n if b.count_samples else 1
        # A call in flight will almost surely be spent (a sent call counts), so there
        # is no point waiting for it: a call that does not fit beside it fails now.
        if b.max_calls is not None and self.used_calls + self.reserved_calls + calls > b.max_calls:
            raise BudgetExceeded(
                "calls", self.used_calls, b.max_calls, reserved=self.reserved_calls, needed=calls
            )
        tokens = bound = 0
        if b.max_tokens is not None:
            bound = prompt_bound(body)
            prompt = math.ceil(bound * self._ratio.get(model, 1.0))
            asked = body.get("max_tokens")
            least = prompt + (int(asked) * n if asked else n)  # at least one token a sample
            if self.used_tokens + least > b.max_tokens:
                raise BudgetExceeded(
                    "tokens", self.used_tokens, b.max_tokens,
                    reserved=self.reserved_tokens, needed=least,
                )  # fmt: skip
            free = b.max_tokens - self.used_tokens - self.reserved_tokens
            if least > free:
                return None
            tokens = least
            if not asked:  # the whole of what is free, and max_tokens capped to it
                body["max_tokens"] = (free - prompt) // n
                tokens = prompt + body["max_tokens"] * n
        self.reserved_calls += calls
        self.reserved_tokens += tokens
        return Hold(calls, tokens, model, bound)

    def settle(self, hold: Hold, usage: Usage) -> None:
        """A call completed: charge its calls and real tokens, free the rest."""
        self._free(hold)
        self.used_calls += hold.calls
        self.used_tokens += usage.total_tokens
        if hold.prompt_bound and usage.prompt_tokens > hold.prompt_bound:  # a bound broken
            ratio = usage.prompt_tokens / hold.prompt_bound
            self._ratio[hold.model] = max(ratio, self._ratio.get(hold.model, 1.0))

    def fail(self, hold: Hold, *, answered: bool) -> None:
        """A call failed or was cancelled. Unsent, it costs nothing; sent, it counts
        as a call, and its tokens at their worst case unless the server ``answered``
        with an error (which generates none)."""
        self._free(hold)
        if hold.sent:
            self.used_calls += hold.calls
            if not answered:
                self.used_tokens += hold.tokens

    def _free(self, hold: Hold) -> None:
        self.reserved_calls -= hold.calls
        self.reserved_tokens -= hold.tokens
        if self._waiters:  # calls waiting for tokens: each tries again
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
