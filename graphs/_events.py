"""The schema of a run's record: transcript entries (``Turn``) and progress events.

``RunResult.transcript`` is a list of ``Turn``; ``RunContext.emit`` takes, and
``stream()`` yields, one of the ``Event`` types. At run time they are plain dicts
(``turn["round"]``, ``event["type"]``), so the TypedDicts only tell a reader and a
type checker which keys there are. A pattern that needs a new transcript key adds
it to ``TurnExtra`` here, so every reader of transcripts sees it.

Example:
    >>> from concilium.graphs.kit import Turn
    >>> entry: Turn = {
    ...     "path": "vote",
    ...     "agent": "a",
    ...     "prompt": "q",
    ...     "text": "\\\\boxed{4}",
    ...     "answer": "4",
    ...     "prompt_tokens": 3,
    ...     "completion_tokens": 5,
    ...     "round": 1,
    ... }
    >>> entry["round"]
    1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    from ._runtime import RunResult

# ------------------------------------------------------------------- transcript


class TurnExtra(TypedDict, total=False):
    """The optional keys patterns add to a transcript entry.

    Attributes:
        round: 1-based round of a multi-round pattern (debate, round table, mixture layer).
        sample: 0-based sample index of a sampling pattern (self-consistency, best-of-n).
        request: the sample index that opened the request a sample came from (the
            samples of one ``n=N`` request share it; separate requests each have their own).
        sample_tokens: a sample's own completion tokens where they are known exactly:
            its token logprobs (one per token), or the request's count when the sample
            was the request's only choice; ``None`` when only a request's total is known.
        mean_logprob: the mean log-probability of a sample's chosen tokens (only when
            the server returned logprobs).
        trace_confidences: DeepConf's scores of a sample's trace, ``mean``,
            ``lowest_group``, ``bottom_10`` and ``tail`` (only when the server returned
            top-k logprobs; ``concilium.graphs.kit.trace_confidences``).
        token_confidences: a sample's DeepConf token confidences, one per token,
            rounded to 3 decimals (only with top-k logprobs), so DeepConf's online
            rule can be replayed on stored samples at any window.
        step: which step of the method spoke (``"plan"``, ``"synthesize"``, ...; ReAct: the turn number).
        saw: whose answers the speaker was shown (names), or how many references.
        role: the speaker's role in the step (tree of thoughts: ``"propose"``, ``"value"``).
        index: the subtask index (manager/worker).
        task: the subtask text (manager/worker).
        chunk: the 0-based chunk index (chain of agents).
        point: the 1-based outline point (skeleton of thought).
        confidence: the speaker's confidence (round table) or the trace's (DeepConf).
        explanation: the speaker's rationale (round table).
        weight: the vote weight derived from the confidence (round table).
        kept: whether the trace survived confidence filtering (DeepConf).
        stopped: why a streamed trace ended (DeepConf online: ``"complete"``,
            ``"below_threshold"``, ``"consensus"``).
        curve: a streamed trace's group confidence after each token (DeepConf online).
    """

    round: int
    sample: int
    request: int
    sample_tokens: int | None
    mean_logprob: float
    trace_confidences: dict[str, float]
    token_confidences: list[float]
    step: str | int
    saw: list[str] | int
    role: str
    index: int
    task: str
    chunk: int
    point: int
    confidence: float
    explanation: str
    weight: float
    kept: bool
    stopped: str
    curve: list[float]


class Turn(TurnExtra):
    """One transcript entry: who said what, where, and what it cost.

    Attributes:
        path: the node path the turn was taken in (``/``-joined).
        agent: the speaker's name.
        prompt: the prompt (or its last user message) the speaker answered.
        text: the full reply.
        answer: the answer extracted from ``text`` (``None`` if none).
        prompt_tokens: the request's prompt tokens (counted on its first sample only).
        completion_tokens: the request's completion tokens (likewise).
    """

    path: str
    agent: str
    prompt: str
    text: str
    answer: str | None
    prompt_tokens: int
    completion_tokens: int


# ---------------------------------------------------------------------- events
# Every emitted event gets ``path`` (where it happened) and ``t`` (seconds since the
# run started) from ``RunContext.emit`` unless it already has them.


class _Located(TypedDict):
    path: NotRequired[str]
    t: NotRequired[float]


class NodeStarted(_Located):
    """A node began (``node`` is its name; ``path`` ends with it)."""

    type: Literal["node_started"]
    node: str


class NodeFinished(_Located):
    """A node returned its update."""

    type: Literal["node_finished"]
    node: str


class RoundStarted(_Located):
    """A round (or layer, or step) of a multi-round pattern began, with its speakers."""

    type: Literal["round_started"]
    round: int
    agents: list[str]


class TurnEvent(_Located):
    """A transcript entry was recorded (the ``Turn`` without prompt and tokens)."""

    type: Literal["turn"]
    agent: str
    text: str
    answer: str | None
    round: NotRequired[int]
    sample: NotRequired[int]
    step: NotRequired[str | int]


class VoteEvent(_Located):
    """A pattern counted its answers."""

    type: Literal["vote"]
    counts: dict[str, int] | dict[str, float]
    winner: str | None


class CallStarted(_Located):
    """A model call was sent (it was not in the call record)."""

    type: Literal["call_started"]
    agent: str
    key: str
    model: str


class CallFinished(_Located):
    """A model call was answered."""

    type: Literal["call_finished"]
    agent: str
    key: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int


class CallFailed(_Located):
    """A model call failed for good (after its retries), or was cancelled."""

    type: Literal["call_failed"]
    agent: str
    key: str
    error: str


class CallReplayed(_Located):
    """A model call was answered from the call record (resume)."""

    type: Literal["call_replayed"]
    agent: str
    key: str


class CallRetry(_Located):
    """A retryable error; the call is sent again."""

    type: Literal["call_retry"]
    agent: str
    error: str


class ToolEvent(_Located):
    """A tool call went through the ledger: answered (``ok``), ``failed``, or
    ``replayed`` from the call record; ``seconds`` is its wall time."""

    type: Literal["tool"]
    tool: str
    key: str
    status: Literal["ok", "failed", "replayed"]
    seconds: float
    agent: NotRequired[str]
    error: NotRequired[str]


# ``from`` is a keyword, so this one is spelled the functional way.
CallFailover = TypedDict(
    "CallFailover",
    {
        "type": Literal["call_failover"],
        "agent": str,
        "from": str,
        "path": NotRequired[str],
        "t": NotRequired[float],
    },
)
CallFailover.__doc__ = (
    "The replica at ``from`` failed the call (no connection, a 5xx or 429 reply, or a "
    "timeout); the call goes to another healthy replica."
)


class ResultEvent(TypedDict):
    """The last event ``stream()`` yields: the run's result."""

    type: Literal["result"]
    result: RunResult


Event = (
    NodeStarted
    | NodeFinished
    | RoundStarted
    | TurnEvent
    | VoteEvent
    | CallStarted
    | CallFinished
    | CallFailed
    | CallReplayed
    | CallRetry
    | CallFailover
    | ToolEvent
)
"""Any event a run emits (what ``on_event`` receives)."""

StreamEvent = Event | ResultEvent
"""What ``stream()`` yields: the run's events, then one ``ResultEvent``."""
