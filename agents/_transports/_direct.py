"""The direct transport: OpenAI-compatible chat completions over raw aiohttp.

It is chosen for OpenAI-compatible servers (vLLM, SGLang, llama.cpp, the simulated
server) because at the fan-outs concilium exists for, client CPU per call is the
whole cost: ~0.4 ms for raw aiohttp against ~3.5 ms through litellm. Both give the
same ``Completion`` (``completion_from_openai`` reads both).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

from concilium._errors import ModelCallError

from .._model import ModelSpec
from .._redact import redact, scrub
from .._types import Completion, completion_from_openai
from ._base import OnText, status_error


class DirectTransport:
    """OpenAI-compatible chat completions over one aiohttp session per event loop.

    The connector has no total limit (``limit=0``): concurrency is bounded where it
    belongs, by each replica's ``max_concurrency`` in the model pool.

    Example:
        >>> DirectTransport.streams
        True
    """

    streams: ClassVar[bool] = True

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

    async def stream(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText,
    ) -> Completion:
        """One call streamed as server-sent events; each text delta goes to ``on_text``."""
        return await self.chat(spec, api_base, body, headers, on_text=on_text)

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        on_text: OnText | None = None,
    ) -> Completion:
        """One chat call. With ``on_text`` the reply is streamed (as ``stream`` does)."""
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
                    raise status_error(
                        spec, api_base, resp.status, (await resp.read()).decode(errors="replace")
                    )
                if on_text is not None:
                    return await _read_stream(spec, resp, on_text, api_base)
                raw = await resp.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ModelCallError(
                f"connection failed ({type(exc).__name__}: {scrub(str(exc))}); "
                "is the server running?",
                model=spec.model,
                retryable=True,
                connection_failed=True,
                api_base=redact(api_base),
            ) from exc
        except TimeoutError as exc:
            raise ModelCallError(
                f"no answer within {spec.timeout:g} s; raise ModelSpec(timeout=...) "
                "or check the server's load",
                model=spec.model,
                retryable=True,
                api_base=redact(api_base),
            ) from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ModelCallError(
                f"the server's reply is not JSON: {scrub(repr(raw[:200]))}",
                model=spec.model,
                status=resp.status,
                retryable=True,
                api_base=redact(api_base),
            ) from exc
        return completion_from_openai(data, replica=api_base)


async def _read_stream(
    spec: ModelSpec, resp: aiohttp.ClientResponse, on_text: OnText, api_base: str
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
            raise ModelCallError(f"a streamed event is not JSON: {scrub(repr(data[:200]))}", model=spec.model,
                                 status=resp.status, api_base=redact(api_base)) from None  # fmt: skip
        last = chunk
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            delta_part: dict[str, Any] = choice.get("delta") or {}
            delta = str(delta_part.get("content") or "")
            if delta:
                parts.append(delta)
                on_text(delta)
            finish = choice.get("finish_reason") or finish
    message = {"role": "assistant", "content": "".join(parts)}
    data = {"id": last.get("id", ""), "model": last.get("model", ""), "usage": usage,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}  # fmt: skip
    return completion_from_openai(data, replica=api_base)
