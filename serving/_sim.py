"""The simulated server: an OpenAI/vLLM-compatible HTTP server that is a test double.

It is how tests get deterministic answers and benchmarks a controlled latency. It
says what it is everywhere: model id ``concilium-sim`` by default, ``owned_by``
``concilium-simulated-server``, ``system_fingerprint`` ``concilium-simulated`` and an
``X-Concilium-Simulated`` header; every statistical reply starts with
``[simulated reply]``. Never present its output as a model's.

Endpoints: ``/v1/chat/completions`` (``n``, ``logprobs``, streaming),
``/v1/completions``, ``/v1/models``, ``/health``, ``/metrics`` (vLLM metric names),
and ``/sim/stats``, ``/sim/requests``, ``/sim/reset`` for tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from concilium.agents import wire
from concilium.agents.sim import Faults, SimConfig

from ._sim_model import SimAnswer, SimulatedModel, prompt_texts, words

SIMULATED = "concilium-simulated"
HEADERS = {"X-Concilium-Simulated": "true"}


@dataclass
class SimStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    cancelled: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    by_agent: Counter[str] = field(default_factory=Counter)
    waiting: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "prefix_cache_queries": self.prefix_queries,
            "prefix_cache_hits": self.prefix_hits,
            "by_agent": dict(self.by_agent),
            "waiting": self.waiting,
        }


class _PrefixCache:
    """vLLM-style prefix-cache accounting over full blocks of tokens (for /metrics)."""

    def __init__(self, block: int):
        self.block = block
        self._blocks: OrderedDict[str, None] = OrderedDict()

    def count(self, prompt_words: list[str], stats: SimStats) -> None:
        digest = hashlib.sha256()
        hit = True
        for start in range(0, len(prompt_words) - self.block + 1, self.block):
            digest.update(" ".join(prompt_words[start : start + self.block]).encode())
            key = digest.hexdigest()
            stats.prefix_queries += self.block
            if hit and key in self._blocks:
                stats.prefix_hits += self.block
                self._blocks.move_to_end(key)
            else:
                hit = False
                self._blocks[key] = None
                if len(self._blocks) > 100_000:
                    self._blocks.popitem(last=False)


class SimApp:
    """The aiohttp application around a ``SimulatedModel``: routes, counters,
    latency, injected faults and streaming."""

    def __init__(self, config: SimConfig | None = None):
        self.model = SimulatedModel(config or SimConfig())
        self.reset()
        self.app = web.Application(client_max_size=64 * 1024**2)
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics),
                web.get("/sim/stats", self.sim_stats),
                web.get("/sim/requests", self.sim_requests),
                web.post("/sim/reset", self.sim_reset),
                web.post("/sim/faults", self.sim_faults),
            ]
        )

    @property
    def config(self) -> SimConfig:
        return self.model.config

    def reset(self) -> None:
        """Forget every request: counters, the request log, the prefix cache, the call counts."""
        self.model.reset()
        self.stats = SimStats()
        self.log: list[dict[str, Any]] = []
        self.running = (
            asyncio.Semaphore(self.config.max_running) if self.config.max_running else None
        )
        self._prefix = _PrefixCache(self.config.prefix_block)
        self._fault_rng = random.Random(self.config.seed ^ 0x5EED)

    # ------------------------------------------------------- timing and faults

    def latency(self, tokens: int) -> float:
        """Seconds for a reply of ``tokens``: fixed, or ttft + per-token time slowed by load."""
        lat = self.config.latency
        if lat.fixed is not None:
            return lat.fixed
        load = 1 + lat.load_slope * max(self.stats.in_flight - 1, 0)
        return lat.ttft + lat.per_token * tokens * load

    def fault(self) -> str | None:
        """``error``, ``rate_limit``, ``hang``, ``drop`` or ``None`` for the current
        request (seeded)."""
        f = self.config.faults
        if self.stats.requests <= f.first_errors:
            return "error"
        roll = self._fault_rng.random()
        for fault, rate in (
            ("error", f.error_rate),
            ("rate_limit", f.rate_limit_rate),
            ("hang", f.hang_rate),
            ("drop", f.drop_rate),
        ):
            if roll < rate:
                return fault
            roll -= rate
        return None

    # ---------------------------------------------------------------- handlers

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", headers=HEADERS)

    async def models(self, request: web.Request) -> web.Response:
        card = wire.model_card(self.config.model, "concilium-simulated-server", max_model_len=4096)
        return web.json_response(wire.model_list([card]))

    async def sim_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.log)

    async def sim_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def sim_faults(self, request: web.Request) -> web.Response:
        """Replace the injected faults (a JSON ``Faults``): a sick replica recovers."""
        try:
            faults = Faults.model_validate(await request.json())
        except ValueError as exc:
            return _error(400, f"not a Faults object: {exc}")
        self.config.faults = faults
        return web.json_response(faults.model_dump())

    async def metrics(self, request: web.Request) -> web.Response:
        s = self.stats
        name = self.config.model
        lines = [
            "# HELP vllm:num_requests_running Requests in flight (simulated server).",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{name}"}} {s.in_flight - s.waiting}',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{name}"}} {s.waiting}',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="{name}"}} {min(s.in_flight / 256, 1.0)}',
            "# TYPE vllm:prompt_tokens_total counter",
            f'vllm:prompt_tokens_total{{model_name="{name}"}} {s.prompt_tokens}',
            "# TYPE vllm:generation_tokens_total counter",
            f'vllm:generation_tokens_total{{model_name="{name}"}} {s.completion_tokens}',
            "# TYPE vllm:prefix_cache_queries_total counter",
            f'vllm:prefix_cache_queries_total{{model_name="{name}"}} {s.prefix_queries}',
            "# TYPE vllm:prefix_cache_hits_total counter",
            f'vllm:prefix_cache_hits_total{{model_name="{name}"}} {s.prefix_hits}',
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{model_name="{name}",finished_reason="stop"}} {s.completed}',
            "# TYPE concilium_sim_max_in_flight gauge",
            f"concilium_sim_max_in_flight {s.max_in_flight}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        problem = _invalid(body, chat)
        if problem:
            return _error(400, problem)

        stats = self.stats
        agent = request.headers.get("X-Concilium-Agent", "")
        stats.requests += 1
        stats.by_agent[agent] += 1
        self.log.append(
            {
                "agent": agent,
                "session": request.headers.get("X-Session-ID"),  # a router's routing key
                "endpoint": "chat" if chat else "completions",
                "body": body,
                "t": time.time(),  # when it arrived: tests check a client's waits with it
            }
        )
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        gate = self.running
        if gate is not None:  # like a server's scheduler: the rest wait their turn
            stats.waiting += 1
            try:
                await gate.acquire()
            except BaseException:
                stats.in_flight -= 1
                raise
            finally:
                stats.waiting -= 1
        try:
            fault = self.fault()
            if fault in ("error", "rate_limit"):
                stats.errors += 1
                faults = self.config.faults
                status = faults.error_status if fault == "error" else 429
                wait = faults.retry_after
                headers = {} if wait is None else {"Retry-After": f"{wait:g}"}
                return _error(status, "injected fault (simulated server)", headers)
            if fault == "hang":
                await asyncio.sleep(self.config.faults.hang_seconds)
            if fault == "drop":
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            rid = f"sim-{stats.requests}"
            if not chat:
                body = {
                    k: v for k, v in body.items() if k != "messages"
                }  # the prompt is what counts
            answer = self.model.answer(body, agent, rid=rid)
            self._prefix.count(answer.prompt_words, stats)
            counting = self.config.prompt_tokens
            prompt = answer.prompt_tokens if counting == "words" else counted(body, counting)
            usage = wire.usage(prompt, answer.completion_tokens)
            stats.prompt_tokens += prompt
            stats.completion_tokens += answer.completion_tokens
            delay = self.latency(max((len(words(c.text)) for c in answer.choices), default=0))
            if body.get("stream"):
                return await self._stream(request, body, rid, answer, usage, delay, chat)
            await asyncio.sleep(delay)
            stats.completed += 1
            return web.json_response(self._response(rid, answer, usage, chat), headers=HEADERS)
        except asyncio.CancelledError:
            stats.cancelled += 1
            raise
        finally:
            stats.in_flight -= 1
            if gate is not None:
                gate.release()

    def _response(
        self, rid: str, answer: SimAnswer, usage: wire.UsageBody, chat: bool
    ) -> wire.JsonObject:
        if not chat:
            choices = [
                wire.text_choice(i, c.text, c.finish_reason, logprobs=c.logprobs)
                for i, c in enumerate(answer.choices)
            ]
            return wire.text_completion(
                rid, self.config.model, choices, usage, system_fingerprint=SIMULATED
            )
        choices = [
            wire.chat_choice(i, None, "tool_calls", logprobs=c.logprobs, tool_calls=c.tool_calls)
            if c.tool_calls
            else wire.chat_choice(i, c.text, c.finish_reason, logprobs=c.logprobs)
            for i, c in enumerate(answer.choices)
        ]
        return wire.chat_completion(
            rid, self.config.model, choices, usage, system_fingerprint=SIMULATED
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        rid: str,
        answer: SimAnswer,
        usage: wire.UsageBody,
        delay: float,
        chat: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **HEADERS})
        await resp.prepare(request)
        created = int(time.time())

        async def send(choices: list[wire.JsonObject], **extra: Any) -> None:
            event = wire.chunk(rid, self.config.model, choices, created=created, chat=chat,
                               system_fingerprint=SIMULATED, **extra)  # fmt: skip
            await resp.write(wire.sse(event))

        lat = self.config.latency
        ttft = lat.ttft if lat.fixed is None else 0
        await asyncio.sleep(ttft)
        count = len(answer.choices)
        if chat:
            await send(
                [wire.delta_choice(i, {"role": "assistant", "content": ""}) for i in range(count)]
            )
        # word by word, each piece carrying the whitespace before it, so the streamed
        # text joins back to exactly the reply (newlines included)
        pieces = [re.findall(r"\s*\S+", c.text) for c in answer.choices]
        steps = max((len(p) for p in pieces), default=0)
        per_step = (delay - ttft) / max(steps, 1)
        for step in range(steps):
            choices = []
            for i, (c, p) in enumerate(zip(answer.choices, pieces, strict=True)):
                if step < len(p):
                    lp: wire.LogprobsBody | None = (
                        None if c.logprobs is None else {"content": [c.logprobs["content"][step]]}
                    )
                    if chat:
                        choices.append(wire.delta_choice(i, {"content": p[step]}, logprobs=lp))
                    else:
                        choices.append(wire.delta_choice(i, text=p[step], logprobs=lp))
            await asyncio.sleep(per_step)
            await send(choices)
        await send(
            [
                wire.delta_choice(i, {}, c.finish_reason, text=None if chat else "")
                for i, c in enumerate(answer.choices)
            ]
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await resp.write(wire.SSE_DONE)
        self.stats.completed += 1
        await resp.write_eof()
        return resp


TEMPLATE_PER_MESSAGE = 4  # what a chat template adds: a role marker, separators
TEMPLATE_PER_REQUEST = 2  # BOS and the generation prompt


def counted(body: dict[str, Any], counting: str) -> int:
    """Prompt tokens as a server with another tokenizer than words counts them: one a
    character or UTF-8 byte of each message (or of the prompt) and of the tools, plus
    a chat template's markers (``SimConfig.prompt_tokens``).

    Example:
        >>> body = {"messages": [{"role": "user", "content": "Zürich?"}]}
        >>> counted(body, "chars"), counted(body, "bytes")
        (13, 14)
    """
    texts, _ = prompt_texts(body)
    if body.get("tools"):
        texts.append(json.dumps(body["tools"], ensure_ascii=False))
    size = len if counting == "chars" else lambda t: len(t.encode("utf-8", "surrogatepass"))
    messages = len(body.get("messages") or ())
    return sum(size(t) for t in texts) + TEMPLATE_PER_MESSAGE * messages + TEMPLATE_PER_REQUEST


def _invalid(body: object, chat: bool) -> str | None:
    """What is wrong with a request body, or ``None``."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if chat and not isinstance(body.get("messages"), list):
        return "'messages' must be a list of chat messages"
    if not chat and not isinstance(body.get("prompt"), str):
        return "'prompt' must be a string"
    n = body.get("n") or 1
    if not isinstance(n, int) or n < 1:
        return f"'n' must be a positive integer, got {n!r}"
    return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        wire.error(message, "simulated_error", status),
        status=status,
        headers={**HEADERS, **(headers or {})},
    )
