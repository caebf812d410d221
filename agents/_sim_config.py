"""Configuration of the simulated server (a test double; it is not a model): the
schema of a workflow file's ``simulate:``, served by ``concilium.serving.SimServer``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_LATENCY = 3600.0
"""The longest simulated latency, in seconds."""


class _Strict(BaseModel):
    # no .inf or .nan: an infinite latency would hang every request
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
    template: str = (
        "[simulated reply] Working through it step by step, the answer is \\boxed{{{answer}}}."
    )


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
