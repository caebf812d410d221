"""``Agent``: a named model with a system prompt, sampling parameters and an
optional output schema. Agents are cheap frozen values; a debate of five solvers is
five agents.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from concilium._errors import OutputParseError
from concilium._json import MAX_DEPTH, JsonBoundsError, check_depth

from . import _wire
from ._ledger import current_ledger
from ._model import ModelSpec
from ._task_group import task_group
from ._tracing import agent_span
from ._transports._base import OnToken
from ._types import Choice, Completion, Message, TokenLogprob, Usage

_anonymous_calls = itertools.count()


@dataclass(frozen=True)
class AgentReply:
    """What one ``Agent.run`` returned.

    ``text``/``parsed``/``logprobs`` are the first choice's; ``texts``,
    ``parsed_all`` and ``logprobs_all`` hold all ``n`` of them.
    """

    agent: str
    texts: tuple[str, ...]
    usage: Usage
    latency_s: float
    model: str
    parsed_all: tuple[Any, ...] = ()
    logprobs_all: tuple[tuple[TokenLogprob, ...] | None, ...] = ()
    finish_reasons: tuple[str | None, ...] = ()
    replayed: bool = False
    tool_calls: tuple[Mapping[str, Any], ...] = ()  # the first choice's, OpenAI format

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    @property
    def parsed(self) -> Any:
        return self.parsed_all[0] if self.parsed_all else None

    @property
    def logprobs(self) -> tuple[TokenLogprob, ...] | None:
        return self.logprobs_all[0] if self.logprobs_all else None


def as_messages(messages: str | Sequence[Message]) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


def completion_frame(messages: Sequence[Message], system: str | None = None) -> str:
    """The default prompt of a base model: ``system`` as a preamble, then
    ``Q: <the last user message>`` and ``A:`` for the model to continue.

    Example:
        >>> completion_frame([{"role": "user", "content": "France"}], "Capitals.")
        'Capitals.\\n\\nQ: France\\nA:'
    """
    question = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            question = _wire.message_text(message.get("content"))
            break
    frame = f"Q: {question}\nA:"
    return f"{system}\n\n{frame}" if system else frame


def parse_json_output(text: str, schema: type[BaseModel]) -> BaseModel:
    """The first JSON object in ``text`` that validates against ``schema``.

    Raises ``ValueError`` with the reason when there is none.
    """
    decoder = json.JSONDecoder()
    last_error = "no JSON object found"
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
            check_depth(obj)
        except (RecursionError, JsonBoundsError):  # malformed; the rest of the reply is inside it
            raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
        except ValueError:
            pass
        else:
            try:
                return schema.model_validate(obj)
            except ValidationError as exc:
                last_error = f"JSON does not match the schema: {exc.errors(include_url=False)}"
        start = text.find("{", start + 1)
    raise ValueError(last_error)


@dataclass(frozen=True)
class Agent:
    """A named model with a system prompt, sampling parameters and an output schema.

    Args:
        name: who this agent is in transcripts and traces.
        model: the deployment to call.
        system: system prompt text (rendered templates come from ``concilium.prompts``).
        temperature, top_p, max_tokens, seed, stop: sampling parameters.
        output: a pydantic model the reply must parse into (one repair turn).
        logprobs: ask for token log-probabilities (``top_logprobs`` alternatives).
        params: any other body fields the server accepts.
        prompt: for a model in completion mode (a base model, ``/v1/completions``),
            what turns the pattern's messages into the prompt; by default
            ``completion_frame`` (the stop then defaults to a newline).

    Example:
        >>> spec = ModelSpec("hosted_vllm/gemma", api_base="http://127.0.0.1:8000/v1")
        >>> solver = Agent("solver", spec, system="Solve it.", temperature=0.7)
        >>> solver.name
        'solver'
    """

    name: str
    model: ModelSpec
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    output: type[BaseModel] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    prompt: Callable[[Sequence[Message]], str] | None = None

    @property
    def completion_mode(self) -> bool:
        """Whether this agent's model takes a prompt over ``/v1/completions``."""
        return self.model.capabilities.mode == "completion"

    @cached_property
    def _sampling_fields(self) -> dict[str, Any]:
        """The sampling fields this agent sets (the same on every call it makes)."""
        fields = (("temperature", self.temperature), ("top_p", self.top_p),
                  ("max_tokens", self.max_tokens), ("seed", self.seed))  # fmt: skip
        return {name: value for name, value in fields if value is not None}

    def with_options(self, **changes: Any) -> Agent:
        """A copy with some fields changed (agents are immutable)."""
        return replace(self, **changes)

    def _body(
        self, messages: list[dict[str, Any]], n: int, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        system = self.system
        if self.output is not None:
            schema = json.dumps(self.output.model_json_schema())
            note = f"Reply with one JSON object that matches this JSON schema:\n{schema}"
            system = f"{system}\n\n{note}" if system else note
        completion = self.completion_mode
        if system and not completion and messages and messages[0].get("role") == "system":
            # the conversation's system message first, the agent's own added after it
            said = _wire.message_text(messages[0].get("content"))
            first = {**messages[0], "content": f"{said}\n\n{system}"}
            messages = [first, *messages[1:]]
        elif system and not completion:
            messages = [{"role": "system", "content": system}, *messages]
        body: dict[str, Any]
        if completion:
            make = self.prompt or (lambda m: completion_frame(m, self.system))
            body = {"prompt": make(messages), "stop": ["\n"]}
        else:
            body = {"messages": messages}
        body.update(self._sampling_fields)
        if self.stop:
            body["stop"] = list(self.stop)
        if n != 1:
            body["n"] = n
        if self.logprobs and completion:  # the legacy field: how many alternatives
            body["logprobs"] = self.top_logprobs or 1
        elif self.logprobs:
            body["logprobs"] = True
            if self.top_logprobs:
                body["top_logprobs"] = self.top_logprobs
        if self.output is not None and self.model.capabilities.structured_output:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": self.output.__name__,
                    "schema": self.output.model_json_schema(),
                },
            }
        if self.params:
            body.update(self.params)
        if overrides:
            body.update({k: v for k, v in overrides.items() if v is not None})
        return body

    async def run(
        self,
        messages: str | Sequence[Message],
        *,
        n: int = 1,
        key: str | None = None,
        on_text: Callable[[str], None] | None = None,
        on_token: OnToken | None = None,
        **overrides: Any,
    ) -> AgentReply:
        """Call the model once (``n`` samples) and return the reply.

        ``key`` names this call in the run's record so a resumed run replays it;
        patterns pass stable keys, ad-hoc calls get a counter. When the model cannot
        return ``n`` samples in one request, ``n`` concurrent requests are sent; the
        first that fails cancels the others and is raised as itself.
        ``on_text`` and ``on_token`` stream one sample (``Ledger.chat``): ``on_token``
        gets each token with its top-k logprobs and aborts the request by returning
        ``True``.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if (on_text is not None or on_token is not None) and n != 1:
            raise ValueError("on_text and on_token stream one sample; call with n=1")
        key = key or f"{self.name}#{next(_anonymous_calls)}"
        msgs = as_messages(messages)
        started = time.perf_counter()
        with agent_span(self.name):
            if n == 1 or self.model.capabilities.n:
                body = self._body(msgs, n, overrides)
                ledger = current_ledger()
                completions = [
                    await ledger.chat(
                        self.model,
                        body,
                        agent=self.name,
                        key=key,
                        on_text=on_text,
                        on_token=on_token,
                    )
                ]
            else:  # n requests; the first failure cancels the others (their HTTP included)
                async with task_group() as group:
                    tasks = [
                        group.create_task(
                            self._call(msgs, 1, f"{key}#{i}", self._seeded(overrides, i))
                        )
                        for i in range(n)
                    ]
                completions = [task.result() for task in tasks]
            reply = self._reply(completions, time.perf_counter() - started)
            if self.output is not None:
                reply = await self._parse(reply, msgs, key, overrides)
        return reply

    def _seeded(self, overrides: Mapping[str, Any], i: int) -> Mapping[str, Any]:
        seed = overrides.get("seed", self.seed)
        return overrides if seed is None else {**overrides, "seed": seed + i}

    async def _call(
        self,
        msgs: list[dict[str, Any]],
        n: int,
        key: str,
        overrides: Mapping[str, Any],
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[Completion, bool]:
        body = self._body(msgs, n, overrides)
        return await current_ledger().chat(
            self.model, body, agent=self.name, key=key, on_text=on_text
        )

    def _reply(self, completions: Sequence[tuple[Completion, bool]], latency: float) -> AgentReply:
        if len(completions) == 1 and len(completions[0][0].choices) == 1:  # the usual call
            completion, replayed = completions[0]
            c = completion.choices[0]
            return AgentReply(
                self.name, (c.text,), completion.usage, latency, self.model.model,
                logprobs_all=(c.logprobs,), finish_reasons=(c.finish_reason,),
                replayed=replayed, tool_calls=c.tool_calls,
            )  # fmt: skip
        if len(completions) == 1:  # one request (n samples or one): its values as they are
            choices: Sequence[Choice] = completions[0][0].choices
            usage = completions[0][0].usage
        else:
            choices = [c for comp, _ in completions for c in comp.choices]
            usage = Usage()
            for comp, _ in completions:
                usage = usage + comp.usage
        return AgentReply(
            agent=self.name,
            texts=tuple(c.text for c in choices),
            usage=usage,
            latency_s=latency,
            model=self.model.model,
            logprobs_all=tuple(c.logprobs for c in choices),
            finish_reasons=tuple(c.finish_reason for c in choices),
            tool_calls=choices[0].tool_calls if choices else (),
            replayed=all(replayed for _, replayed in completions),
        )

    async def _parse(
        self, reply: AgentReply, msgs: list[dict[str, Any]], key: str, overrides: Mapping[str, Any]
    ) -> AgentReply:
        assert self.output is not None
        parsed: list[Any] = []
        errors: list[str] = []
        for text in reply.texts:
            try:
                parsed.append(parse_json_output(text, self.output))
            except ValueError as exc:
                parsed.append(None)
                errors.append(str(exc))
        if len(reply.texts) == 1 and parsed[0] is None:
            # One repair turn: show the model its reply and what was wrong with it.
            repair = [
                *msgs,
                {"role": "assistant", "content": reply.text},
                {
                    "role": "user",
                    "content": f"That reply could not be used: {errors[0]}. "
                    "Reply again with only the JSON object.",
                },
            ]
            fixed, replayed = await self._call(repair, 1, f"{key}#repair", overrides)
            text = fixed.choices[0].text if fixed.choices else ""
            try:
                parsed = [parse_json_output(text, self.output)]
            except ValueError as exc:
                raise OutputParseError(
                    f"the reply does not match {self.output.__name__} after one repair turn: {exc}",
                    agent=self.name,
                    text=text,
                ) from exc
            reply = replace(
                reply,
                texts=(text,),
                usage=reply.usage + fixed.usage,
                logprobs_all=(fixed.choices[0].logprobs,),
                replayed=reply.replayed and replayed,
            )
        elif all(p is None for p in parsed):
            raise OutputParseError(
                f"none of the {len(parsed)} samples matches {self.output.__name__}: {errors[0]}",
                agent=self.name,
                text=reply.text,
            )
        return replace(reply, parsed_all=tuple(parsed))
