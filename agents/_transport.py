"""How a request reaches a server.

Two transports give identical ``Completion`` values:

* ``DirectTransport`` posts the OpenAI JSON body on one shared aiohttp session per
  event loop. It is chosen for OpenAI-compatible servers (vLLM, SGLang, llama.cpp,
  the simulated server) because at the fan-outs concilium exists for, client CPU per
  call is the whole cost: ~0.4 ms for raw aiohttp against ~3.5 ms through litellm.
* ``LiteLLMTransport`` (in ``_litellm``) reaches every other provider.

A transport raises ``ModelCallError`` with ``retryable`` set; the ledger retries.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any, Callable, Mapping, Protocol

import aiohttp

from concilium._errors import ModelCallError

from ._model import ModelSpec
from ._types import Completion, completion_from_openai

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Transport(Protocol):
    """Sends one chat-completions body to one replica."""

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion: ...


def status_error(spec: ModelSpec, api_base: str | None, status: int, detail: str) -> ModelCallError:
    """The error for an HTTP status, with a hint at the usual fix."""
    retryable = status in RETRYABLE_STATUS
    hint = {
        400: "the server rejected the request; check the model's capabilities "
        "(n, logprobs, structured output) and the sampling parameters",
        401: "check api_key (or the provider's API key environment variable)",
        403: "check api_key and that this key may use the model",
        404: f"check that the server serves model {spec.served_name!r} at this api_base",
        429: "the server is rate limiting; lower max_concurrency or the fan-out",
    }.get(status, "retrying" if retryable else "")
    message = detail.strip()[:500] or "(empty body)"
    if hint:
        message = f"{message} -- {hint}"
    return ModelCallError(
        message, model=spec.model, status=status, retryable=retryable, api_base=api_base
    )


class DirectTransport:
    """OpenAI-compatible chat completions over one aiohttp session per event loop.

    The connector has no total limit (``limit=0``): concurrency is bounded where it
    belongs, by each replica's ``max_concurrency`` in the model pool.
    """

    def __init__(self) -> None:
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]
        self._sessions = weakref.WeakKeyDictionary()

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=json.dumps,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[loop] = session
        return session

    async def aclose(self) -> None:
        """Close the session of the running loop (``run_sync`` and the CLI call this)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        session = self._sessions.pop(loop, None)
        if session is not None and not session.closed:
            await session.close()

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """One chat call. With ``on_text`` the reply is streamed (server-sent events)
        and each text delta is passed to it as it arrives."""
        if api_base is None:
            raise ModelCallError(
                "the direct transport needs an api_base; set ModelSpec(api_base=...) "
                "or use transport='litellm'",
                model=spec.model,
            )
        if on_text is not None:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        payload = json.dumps({"model": spec.served_name, **body})
        request_headers = {"Content-Type": "application/json", **headers}
        if spec.api_key:
            request_headers["Authorization"] = f"Bearer {spec.api_key}"
        url = f"{api_base}/chat/completions"
        try:
            async with self.session().post(
                url,
                data=payload,
                headers=request_headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout),
            ) as resp:
                if resp.status >= 400:
                    raise status_error(spec, api_base, resp.status, (await resp.read()).decode(errors="replace"))
                if on_text is not None:
                    return await _read_stream(spec, resp, on_text, api_base)
                raw = await resp.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ModelCallError(
                f"connection failed ({type(exc).__name__}: {exc}); is the server running?",
                model=spec.model,
                retryable=True,
                connection_failed=True,
                api_base=api_base,
            ) from exc
        except TimeoutError as exc:
            raise ModelCallError(
                f"no answer within {spec.timeout:g} s; raise ModelSpec(timeout=...) "
                "or check the server's load",
                model=spec.model,
                retryable=True,
                api_base=api_base,
            ) from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ModelCallError(
                f"the server's reply is not JSON: {raw[:200]!r}",
                model=spec.model,
                status=resp.status,
                retryable=True,
                api_base=api_base,
            ) from exc
        return completion_from_openai(data, replica=api_base)


async def _read_stream(
    spec: ModelSpec, resp: aiohttp.ClientResponse, on_text: Callable[[str], None], api_base: str
) -> Completion:
    """Assemble a one-choice completion from an OpenAI event stream, passing on deltas."""
    parts: list[str] = []
    last: dict[str, Any] = {}
    finish = None
    usage: dict[str, Any] = {}
    async for raw_line in resp.content:
        line = raw_line.decode(errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ModelCallError(f"a streamed event is not JSON: {data[:200]!r}", model=spec.model,
                                 status=resp.status, api_base=api_base) from None  # fmt: skip
        last = chunk
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            delta = (choice.get("delta") or {}).get("content") or ""
            if delta:
                parts.append(delta)
                on_text(delta)
            finish = choice.get("finish_reason") or finish
    message = {"role": "assistant", "content": "".join(parts)}
    data = {"id": last.get("id", ""), "model": last.get("model", ""), "usage": usage,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}  # fmt: skip
    return completion_from_openai(data, replica=api_base)


direct = DirectTransport()


def transport_for(spec: ModelSpec) -> Transport:
    """The transport a spec's calls take (see ``ModelSpec.transport``)."""
    if not isinstance(spec.transport, str):
        return spec.transport
    if spec.uses_direct_transport():
        return direct
    from ._litellm import litellm_transport

    return litellm_transport


async def aclose() -> None:
    """Release the network resources concilium holds on the running loop."""
    await direct.aclose()
