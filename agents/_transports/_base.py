"""The transport protocol and what every transport shares: status errors.

A transport sends one chat-completions body to one replica and returns a
``Completion``; it raises ``ModelCallError`` with ``retryable`` set (the ledger
retries). Streaming is part of the protocol: ``stream`` passes each text delta to
``on_text`` as it arrives. A transport that cannot stream says so with
``streams = False``; its ``stream`` delivers the whole text as one delta once the
call is done (``ChatOnly`` and ``WholeTextStream`` give that for free).

A transport that can also pass each streamed token with its top-k logprobs as it
arrives says so with ``streams_tokens = True``; its ``stream`` takes ``on_token``,
and an ``on_token`` that returns ``True`` aborts the request: the stream is closed
(a vLLM server aborts a request whose client is gone) and the call returns what came
so far, ``finish_reason`` ``"abort"``. For any other transport the ledger passes the
tokens of the whole reply after the call (``replay_tokens``); they cannot abort it.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from concilium._errors import ModelCallError

from .._model import ModelSpec, SendsChat
from .._redact import redact, scrub
from .._types import Completion, TokenLogprob

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

OnText = Callable[[str], None]
OnToken = Callable[[TokenLogprob], "bool | None"]
"""Gets each streamed token with its top-k logprobs; ``True`` aborts the request."""
ABORTED = "abort"  # the finish reason of a stream its caller aborted (vLLM's own word)


def replay_tokens(completion: Completion, on_token: OnToken) -> None:
    """Pass a whole reply's tokens (its first choice's logprobs) to ``on_token``, as
    a replayed call or a transport without ``streams_tokens`` does; it stops at the
    first ``True`` (the reply is already whole: nothing is aborted).

    Example:
        >>> from concilium.agents import Choice
        >>> reply = Completion(
        ...     (Choice("a b", logprobs=(TokenLogprob("a", -0.1), TokenLogprob("b", -0.2))),)
        ... )
        >>> seen = []
        >>> replay_tokens(reply, lambda t: seen.append(t.token) or True)
        >>> seen
        ['a']
    """
    for token in (completion.choices[0].logprobs or ()) if completion.choices else ():
        if on_token(token):
            return


@runtime_checkable
class Transport(Protocol):
    """Sends one chat-completions body to one replica, whole or streamed.

    Attributes:
        streams: ``True`` when ``stream`` passes deltas on as they arrive; ``False``
            when it passes the whole text once, after the call.
    """

    streams: ClassVar[bool]

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion:
        """One call; the whole reply."""
        ...

    async def stream(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText,
    ) -> Completion:
        """One call of one sample; each text delta goes to ``on_text``, then the whole reply."""
        ...


class StreamsTokens(Protocol):
    """A transport with ``streams_tokens = True``: its ``stream`` also takes ``on_token``."""

    streams_tokens: ClassVar[bool]

    async def stream(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText,
        on_token: OnToken | None = None,
    ) -> Completion:
        """One call of one sample; its deltas to ``on_text``, its tokens to ``on_token``."""
        ...


class WholeTextStream:
    """For transports that cannot stream: ``stream`` is ``chat`` plus one delta."""

    streams: ClassVar[bool] = False

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion:
        raise NotImplementedError

    async def stream(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText,
    ) -> Completion:
        completion = await self.chat(spec, api_base, body, headers)
        on_text(completion.choices[0].text if completion.choices else "")
        return completion


class ChatOnly(WholeTextStream):
    """A ``Transport`` around an object that has only ``chat`` (a test double such as
    ``FakeModel``, given as ``ModelSpec(transport=...)``). The object's ``chat`` is
    looked up on every call, so a test may replace it on the instance."""

    def __init__(self, inner: SendsChat):
        self.inner = inner

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion:
        return await self.inner.chat(spec, api_base, body, headers)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (never negative), or
    ``None`` when there is none or it is unreadable. It is either a number of
    seconds or an HTTP date; the ledger caps it (``RetryPolicy.max_retry_after``).

    Example:
        >>> retry_after_seconds("2"), retry_after_seconds(None), retry_after_seconds("soon")
        (2.0, None, None)
        >>> retry_after_seconds("Tue, 24 Nov 2026 17:00:30 GMT", now=1795539600.0)
        30.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def status_error(
    spec: ModelSpec,
    api_base: str | None,
    status: int,
    detail: str,
    retry_after: float | None = None,
) -> ModelCallError:
    """The error for an HTTP status, with a hint at the usual fix. The server's
    ``detail`` is cut to 300 characters and, like ``api_base``, has its credentials
    masked (a server may echo the key it was sent). ``retry_after`` is the wait the
    server asked for (``retry_after_seconds``), kept on the error for the ledger.

    Example:
        >>> err = status_error(ModelSpec("hosted_vllm/m"), "http://h/v1", 429, "slow down", 2.0)
        >>> err.retryable, "max_concurrency" in str(err), err.retry_after
        (True, True, 2.0)
    """
    retryable = status in RETRYABLE_STATUS
    hint = {
        400: "the server rejected the request; check the model's capabilities "
        "(n, logprobs, structured output) and the sampling parameters",
        401: "check api_key (or the provider's API key environment variable)",
        403: "check api_key and that this key may use the model",
        404: f"check that the server serves model {spec.served_name!r} at this api_base",
        429: "the server is rate limiting; lower max_concurrency or the fan-out",
    }.get(status, "the server failed or is overloaded; check its log" if status >= 500 else "")
    message = scrub(detail) or "(empty body)"
    if hint:
        message = f"{message} -- {hint}"
    return ModelCallError(
        message,
        model=spec.model,
        status=status,
        retryable=retryable,
        api_base=api_base and redact(api_base),
        retry_after=retry_after if retryable else None,
    )
