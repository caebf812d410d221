"""Configuration of the simulated server (a test double; it is not a model): the
schema of a workflow file's ``simulate:``, served by ``concilium.serving.SimServer``."""

from __future__ import annotations

import re
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from concilium._json import load_json

MAX_LATENCY = 3600.0
"""The longest simulated latency, in seconds."""
TOOL_CALLS = "TOOL_CALLS:"
"""How a scripted reply that is tool calls starts."""


class _Strict(BaseModel):
    # no .inf or .nan: an infinite latency would hang every request
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _regex(pattern: str, what: str) -> str:
    """``pattern`` if it compiles (the server searches with it on every request)."""
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(
            f"{what} {pattern[:80]!r} is not a valid regular expression ({exc}); "
            "escape special characters such as ( [ * + ? with \\"
        ) from None
    return pattern


class ScriptedCall(_Strict):
    """One tool call of a scripted ``TOOL_CALLS: [...]`` reply."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict[str, Any])


def scripted_calls(reply: str) -> list[dict[str, Any]]:
    """The tool calls of a scripted reply ``TOOL_CALLS: [{"name": ..., "arguments":
    {...}}, ...]`` (``[]`` for any other reply).

    Raises:
        ValueError: the list after ``TOOL_CALLS:`` is not JSON within bounds or not
            a list of ``{"name", "arguments"}`` objects.
    """
    if not reply.startswith(TOOL_CALLS):
        return []
    fix = 'write TOOL_CALLS: [{"name": "tool", "arguments": {...}}]'
    try:
        calls: object = load_json(reply.removeprefix(TOOL_CALLS))
    except ValueError as exc:
        raise ValueError(f"the list after {TOOL_CALLS} is not JSON ({exc}); {fix}") from None
    if not isinstance(calls, list):
        raise ValueError(f"{TOOL_CALLS} must be followed by a JSON list; {fix}")
    out: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        try:
            out.append(ScriptedCall.model_validate(call).model_dump())
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            where = ".".join(map(str, problem["loc"])) or "it"
            raise ValueError(f"scripted tool call {i}: {where}: {problem['msg']}; {fix}") from None
    return out


class Latency(_Strict):
    """How long a request takes.

    ``fixed`` seconds per request when set; otherwise ``ttft + per_token x tokens``,
    with the per-token time growing by ``load_slope`` x (requests in flight - 1), which
    is how a batched engine's decode step slows as its batch grows.
    """

    fixed: float | None = Field(default=None, ge=0, le=MAX_LATENCY)
    ttft: float = Field(default=0.02, ge=0, le=MAX_LATENCY)
    per_token: float = Field(default=0.001, ge=0, le=60)
    load_slope: float = Field(default=0.0, ge=0, le=60)


class Rule(_Strict):
    """A scripted reply. ``agent`` matches the ``X-Concilium-Agent`` header, ``match``
    is a regex searched in the user messages; both must match when both are given.
    ``replies`` are used one per matching call (per agent), the last one repeating.
    A reply ``TOOL_CALLS: [{"name": "search", "arguments": {"query": "x"}}, ...]``
    comes back as OpenAI tool calls (finish reason ``tool_calls``)."""

    agent: str | None = None
    match: str | None = None
    replies: list[str] = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _match_compiles(cls, value: str | None) -> str | None:
        return value if value is None else _regex(value, "match:")

    @field_validator("replies")
    @classmethod
    def _tool_calls_parse(cls, value: list[str]) -> list[str]:
        for reply in value:
            scripted_calls(reply)
        return value


class TokenConfidence(_Strict):
    """A per-token confidence model, for testing DeepConf (a test double: no model's
    confidences are drawn like this). Each token of a statistical reply gets top-k
    logprobs whose DeepConf token confidence (minus the mean of the top-k) is drawn
    around ``right`` when the reply's boxed answer is the right one and around
    ``right - separation`` when it is wrong: each reply's own mean is jittered by
    ``trace_spread``, each token by ``token_spread`` (normal draws, seeded like the
    reply; at least 0.01). ``separation`` is how far apart right and wrong traces are
    on average, in token-confidence units; 0 makes confidence say nothing.
    """

    right: float = Field(default=3.0, gt=0, le=50)
    separation: float = Field(default=1.0, ge=0, le=50)
    trace_spread: float = Field(default=0.5, ge=0, le=50)
    token_spread: float = Field(default=1.0, ge=0, le=50)


class Statistical(_Strict):
    """Answers right with probability ``accuracy``, otherwise wrong.

    The right answer comes from ``answers`` (regex on the first user message ->
    answer) or, with ``arithmetic``, from evaluating a plain arithmetic question such
    as "What is 12 * 7?" with a safe parser. ``conformity`` is the chance that an
    agent shown other agents' boxed answers adopts their most common one (what makes
    simulated debates converge).
    """

    accuracy: float = Field(default=0.7, ge=0, le=1)
    answers: dict[str, str] = Field(default_factory=dict)
    arithmetic: bool = True
    wrong: list[str] = Field(default_factory=list)
    conformity: float = Field(default=0.5, ge=0, le=1)
    confidence: TokenConfidence | None = Field(
        default=None,
        description="a per-token confidence model in which wrong replies are less confident "
        "(for DeepConf; a test double); without it logprobs say nothing of right or wrong",
    )
    template: str = (
        "[simulated reply] Working through it step by step, the answer is \\boxed{{{answer}}}."
    )

    @field_validator("answers")
    @classmethod
    def _answers_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            _regex(pattern, "the answers key")
        return value

    @field_validator("template")
    @classmethod
    def _only_answer(cls, value: str) -> str:
        """The template is formatted with ``answer`` only (``str.format``)."""
        fix = "use {answer} for the answer and {{ and }} for literal braces"
        try:
            fields = [
                (f, spec, conv)
                for _, f, spec, conv in string.Formatter().parse(value)
                if f is not None
            ]
        except ValueError as exc:
            raise ValueError(f"the template cannot be formatted ({exc}); {fix}") from None
        for name, spec, conv in fields:
            if name != "answer" or spec or conv:
                shown = (
                    "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
                )
                raise ValueError(f"the template may hold only {{answer}}, not {shown}; {fix}")
        return value


class Faults(_Strict):
    """Injected failures: the first ``first_errors`` requests fail, then each request
    fails with ``error_rate`` (status ``error_status``), is refused with 429 with
    ``rate_limit_rate``, hangs with ``hang_rate`` (for ``hang_seconds``, then answers)
    or has its connection dropped with ``drop_rate`` (seeded). Failures carry a
    ``Retry-After: retry_after`` header when that is set."""

    first_errors: int = Field(default=0, ge=0, le=1_000_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    hang_seconds: float = Field(default=3600.0, ge=0, le=3600)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after: float | None = Field(default=None, ge=0, le=3600)


class SimConfig(_Strict):
    """Everything the simulated server does. Rules are tried first, then the
    statistical answerer."""

    model: str = "concilium-sim"
    seed: int = 0
    latency: Latency = Field(default_factory=Latency)
    rules: list[Rule] = Field(default_factory=list)
    statistical: Statistical = Field(default_factory=Statistical)
    faults: Faults = Field(default_factory=Faults)
    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    prefix_block: int = Field(default=16, ge=1, le=1_000_000)
    max_running: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="requests decoded at once; more wait (vllm:num_requests_waiting)",
    )
    prompt_tokens: Literal["words", "chars", "bytes"] = Field(
        default="words",
        description="how the prompt is counted: a token a word, or a token a character or "
        "UTF-8 byte of each message plus a chat template's 4 a message and 2 a request",
    )
