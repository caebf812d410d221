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
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from concilium.tools import NotArithmetic, evaluate, find_expression, format_number

from ._sim_config import SimConfig

SIMULATED = "concilium-simulated"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# "... think the answer is 84." (ReConcile's grouped answers), not "the answer is \boxed{..}"
_ANSWER_IS = re.compile(r"think the answer is (?!\\)([^\s.,;\\]+)")


def _words(text: str) -> list[str]:
    return text.split()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


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


class SimulatedModel:
    """Decides replies, latency and faults; keeps the counters. No I/O here."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.stats = SimStats()
        self.running = asyncio.Semaphore(self.config.max_running) if self.config.max_running else None
        self.log: list[dict[str, Any]] = []
        self._agent_calls: defaultdict[str, int] = defaultdict(int)
        self._rule_calls: defaultdict[tuple[int, str], int] = defaultdict(int)
        self._blocks: OrderedDict[str, None] = OrderedDict()
        self._fault_rng = random.Random(self.config.seed ^ 0x5EED)

    # ----------------------------------------------------------------- replies

    def _rng(self, agent: str, call: int, choice: int, seed: int | None) -> random.Random:
        basis = f"{self.config.seed}|{agent}|{call if seed is None else f's{seed}'}|{choice}"
        return random.Random(int.from_bytes(hashlib.sha256(basis.encode()).digest()[:8], "big"))

    def _scripted(self, agent: str, user_text: str) -> str | None:
        for index, rule in enumerate(self.config.rules):
            if rule.agent is not None and rule.agent != agent:
                continue
            if rule.match is not None and not re.search(rule.match, user_text):
                continue
            k = (index, agent)
            reply = rule.replies[min(self._rule_calls[k], len(rule.replies) - 1)]
            self._rule_calls[k] += 1
            return reply
        return None

    def _right_answer(self, question: str) -> str | None:
        stat = self.config.statistical
        for pattern, answer in stat.answers.items():
            if re.search(pattern, question):
                return answer
        if stat.arithmetic:
            expression = find_expression(question)
            if expression is not None:
                try:
                    return format_number(evaluate(expression))
                except NotArithmetic:
                    return None
        return None

    def _statistical_answer(self, rng: random.Random, question: str, last_user: str) -> str:
        stat = self.config.statistical
        # Other agents' answers in the prompt ("\boxed{answer}" is the format instruction).
        shown = [a for a in _BOXED.findall(last_user) + _ANSWER_IS.findall(last_user) if a.strip() and a.strip() != "answer"]
        if shown and rng.random() < stat.conformity:
            return Counter(shown).most_common(1)[0][0]
        right = self._right_answer(question)
        if right is not None and rng.random() < stat.accuracy:
            return right
        if stat.wrong:
            return rng.choice(stat.wrong)
        if right is not None and re.fullmatch(r"-?\d+", right):
            return str(int(right) + rng.choice([-1, 1]) * rng.randint(1, 10))
        return "unknown"

    def _statistical(self, rng: random.Random, question: str, last_user: str, body: dict[str, Any]) -> str:
        answer = self._statistical_answer(rng, question, last_user)
        schema = _json_schema(body)
        if schema is not None:  # structured output: a JSON object of that schema
            return json.dumps(_fill(schema, schema.get("$defs", {}), rng, answer, ""))
        return self.config.statistical.template.format(answer=answer)

    def replies(self, body: dict[str, Any], agent: str, prompt_texts: list[str], n: int) -> list[str]:
        """The ``n`` reply texts of one request."""
        user_texts = prompt_texts or [""]
        call = self._agent_calls[agent]
        self._agent_calls[agent] += 1
        seed = body.get("seed")
        out = []
        for choice in range(n):
            scripted = self._scripted(agent, "\n".join(user_texts))
            if scripted is not None:
                out.append(scripted)
                continue
            rng = self._rng(agent, call, choice, seed)
            out.append(self._statistical(rng, user_texts[0], user_texts[-1], body))
        return out

    # ------------------------------------------------------------------ timing

    def latency(self, tokens: int) -> float:
        lat = self.config.latency
        if lat.fixed is not None:
            return lat.fixed
        load = 1 + lat.load_slope * max(self.stats.in_flight - 1, 0)
        return lat.ttft + lat.per_token * tokens * load

    def prefix_cache(self, prompt_words: list[str]) -> None:
        """Count vLLM-style prefix-cache queries and hits over full blocks of tokens."""
        size = self.config.prefix_block
        digest = hashlib.sha256()
        hit = True
        for start in range(0, len(prompt_words) - size + 1, size):
            digest.update(" ".join(prompt_words[start : start + size]).encode())
            key = digest.hexdigest()
            self.stats.prefix_queries += size
            if hit and key in self._blocks:
                self.stats.prefix_hits += size
                self._blocks.move_to_end(key)
            else:
                hit = False
                self._blocks[key] = None
                if len(self._blocks) > 100_000:
                    self._blocks.popitem(last=False)

    def fault(self) -> str | None:
        f = self.config.faults
        if self.stats.requests <= f.first_errors:
            return "error"
        roll = self._fault_rng.random()
        if roll < f.error_rate:
            return "error"
        if roll < f.error_rate + f.hang_rate:
            return "hang"
        if roll < f.error_rate + f.hang_rate + f.drop_rate:
            return "drop"
        return None

    # -------------------------------------------------------------- responses

    def logprobs(self, text: str, top: int, rng: random.Random) -> dict[str, Any]:
        content = []
        for word in _words(text):
            lp = -abs(rng.gauss(0, 0.6))
            alternatives = [{"token": word, "logprob": lp}]
            for k in range(max(top - 1, 0)):
                alternatives.append({"token": f"{word}~{k}", "logprob": lp - 1.0 - k - rng.random()})
            content.append({"token": word, "logprob": lp, "top_logprobs": alternatives[: max(top, 0)]})
        return {"content": content}


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def _fill(schema: dict[str, Any], defs: dict[str, Any], rng: random.Random, answer: str, key: str) -> Any:
    """A value of ``schema``: fields named ``answer`` get the statistical answer,
    numbers a seeded value within their bounds, strings a ``[simulated ...]`` text."""
    if "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    for union in ("anyOf", "oneOf", "allOf"):
        if union in schema:
            return _fill(schema[union][0], defs, rng, answer, key)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if kind == "object":
        return {k: _fill(v, defs, rng, answer, k) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 2)), min(3, int(schema.get("maxItems", 3))))
        return [_fill(schema.get("items") or {}, defs, rng, answer, f"{key} {i + 1}") for i in range(count)]
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 1 if kind == "number" else 10)
        return rng.randint(int(low), int(high)) if kind == "integer" else round(rng.uniform(max(low, high - 0.5), high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return answer if key == "answer" else f"[simulated {key or 'text'}]"


def _prompt_texts(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(all message texts, user message texts) of a chat body."""
    messages = body.get("messages") or []
    texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    users = [_text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return texts, users


class SimApp:
    """The aiohttp application around a ``SimulatedModel``."""

    def __init__(self, config: SimConfig | None = None):
        self.model = SimulatedModel(config or SimConfig())
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
            ]
        )

    @property
    def config(self) -> SimConfig:
        return self.model.config

    # ---------------------------------------------------------------- handlers

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Concilium-Simulated": "true"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.config.model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "concilium-simulated-server",
                        "max_model_len": 4096,
                    }
                ],
            }
        )

    async def sim_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.model.stats.as_dict())

    async def sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.model.log)

    async def sim_reset(self, request: web.Request) -> web.Response:
        self.model.reset()
        return web.json_response({"reset": True})

    async def metrics(self, request: web.Request) -> web.Response:
        s = self.model.stats
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
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        if chat and not isinstance(body.get("messages"), list):
            return _error(400, "'messages' must be a list of chat messages")
        if not chat and not isinstance(body.get("prompt"), str):
            return _error(400, "'prompt' must be a string")
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            return _error(400, f"'n' must be a positive integer, got {n!r}")

        m = self.model
        stats = m.stats
        agent = request.headers.get("X-Concilium-Agent", "")
        stats.requests += 1
        stats.by_agent[agent] += 1
        m.log.append({"agent": agent, "endpoint": "chat" if chat else "completions", "body": body})
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        gate = m.running
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
            fault = m.fault()
            if fault == "error":
                stats.errors += 1
                return _error(m.config.faults.error_status, "injected fault (simulated server)")
            if fault == "hang":
                await asyncio.sleep(3600)
            if fault == "drop":
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            if chat:
                texts, users = _prompt_texts(body)
            else:
                texts = users = [body["prompt"]]
            prompt_words = _words(" ".join(texts))
            m.prefix_cache(prompt_words)
            max_tokens = body.get("max_tokens") or m.config.max_tokens
            replies = []
            finish = []
            for text in m.replies(body, agent, users, n):
                words = _words(text)
                if len(words) > max_tokens:
                    text, reason = " ".join(words[:max_tokens]), "length"
                else:
                    reason = "stop"
                replies.append(text)
                finish.append(reason)
            out_tokens = [len(_words(t)) for t in replies]
            stats.prompt_tokens += len(prompt_words)
            stats.completion_tokens += sum(out_tokens)
            delay = m.latency(max(out_tokens, default=0))
            rng = random.Random(len(m.log))
            want_logprobs = bool(body.get("logprobs"))
            top = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
            logprobs = [m.logprobs(t, top, rng) if want_logprobs else None for t in replies]
            usage = {
                "prompt_tokens": len(prompt_words),
                "completion_tokens": sum(out_tokens),
                "total_tokens": len(prompt_words) + sum(out_tokens),
            }
            rid = f"sim-{stats.requests}"
            if body.get("stream"):
                return await self._stream(request, body, rid, replies, finish, logprobs, usage, delay, chat)
            await asyncio.sleep(delay)
            stats.completed += 1
            return web.json_response(
                _response(rid, m.config.model, replies, finish, logprobs, usage, chat),
                headers={"X-Concilium-Simulated": "true"},
            )
        except asyncio.CancelledError:
            stats.cancelled += 1
            raise
        finally:
            stats.in_flight -= 1
            if gate is not None:
                gate.release()

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        rid: str,
        replies: list[str],
        finish: list[str],
        logprobs: list[Any],
        usage: dict[str, int],
        delay: float,
        chat: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Concilium-Simulated": "true"}
        )
        await resp.prepare(request)
        model = self.config.model
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {"id": rid, "object": kind, "created": created, "model": model,
                     "system_fingerprint": SIMULATED, "choices": choices, **extra}  # fmt: skip
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        lat = self.config.latency
        await asyncio.sleep(lat.ttft if lat.fixed is None else 0)
        if chat:
            await send([{"index": i, "delta": {"role": "assistant", "content": ""}} for i in range(len(replies))])
        # word by word, each piece carrying the whitespace before it, so the streamed
        # text joins back to exactly the reply (newlines included)
        words = [re.findall(r"\s*\S+", t) for t in replies]
        steps = max((len(w) for w in words), default=0)
        per_step = (delay - (lat.ttft if lat.fixed is None else 0)) / max(steps, 1)
        for step in range(steps):
            choices = []
            for i, w in enumerate(words):
                if step < len(w):
                    piece = w[step]
                    choice: dict[str, Any] = {"index": i}
                    if chat:
                        choice["delta"] = {"content": piece}
                    else:
                        choice["text"] = piece
                    if logprobs[i] is not None:
                        choice["logprobs"] = {"content": [logprobs[i]["content"][step]]}
                    choices.append(choice)
            await asyncio.sleep(per_step)
            await send(choices)
        await send([{"index": i, "delta": {} if chat else None, "finish_reason": finish[i]} for i in range(len(replies))])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        self.model.stats.completed += 1
        await resp.write_eof()
        return resp


def _tool_calls(text: str, rid: str) -> list[dict[str, Any]]:
    """A scripted ``TOOL_CALLS: [...]`` reply as OpenAI tool calls (else ``[]``)."""
    if not text.startswith("TOOL_CALLS:"):
        return []
    calls = json.loads(text.removeprefix("TOOL_CALLS:"))
    return [
        {"id": f"call-{rid}-{j}", "type": "function",
         "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
        for j, c in enumerate(calls)
    ]  # fmt: skip


def _response(
    rid: str,
    model: str,
    replies: list[str],
    finish: list[str],
    logprobs: list[Any],
    usage: dict[str, int],
    chat: bool,
) -> dict[str, Any]:
    choices = []
    for i, text in enumerate(replies):
        if chat:
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text}}
            choice["logprobs"] = logprobs[i]
            calls = _tool_calls(text, f"{rid}-{i}")
            if calls:
                choice["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
                finish = [*finish[:i], "tool_calls", *finish[i + 1 :]]
        else:
            choice = {"index": i, "text": text}
            lp = logprobs[i]
            choice["logprobs"] = (
                None
                if lp is None
                else {
                    "tokens": [t["token"] for t in lp["content"]],
                    "token_logprobs": [t["logprob"] for t in lp["content"]],
                    "top_logprobs": [{a["token"]: a["logprob"] for a in t["top_logprobs"]} for t in lp["content"]],
                }
            )
        choice["finish_reason"] = finish[i]
        choices.append(choice)
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SIMULATED,
        "choices": choices,
        "usage": usage,
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "simulated_error", "code": status}},
        status=status,
        headers={"X-Concilium-Simulated": "true"},
    )
