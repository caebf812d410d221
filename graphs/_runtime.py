"""Running a graph: ``run`` / ``run_sync`` and the ``RunResult`` they return.

A run installs a ``RunContext`` (ledger with budget and call record, event sink),
invokes the compiled LangGraph graph, optionally checkpointed in SQLite, and reads
the result from the final state. With a ``state_path`` the LangGraph checkpoints go
to that SQLite file and the call record to a sibling file (``run.calls.db`` beside
``run.db``: two connections writing one file from one event loop would deadlock), so
``resume=True`` continues where a failed run stopped and repeats no completed call.
Runs that share a state file in one process (an eval's) share one ``StateStore``
instead (``store=``): one connection to each file, not one per run.
Before it starts, a run with a state file is claimed (``_resume.claim_run``): its run
id locked, its workflow and input checked against what the file recorded.
A resumed run continues from its last checkpoint with the writes its steps saved since,
wherever a kill left it; a run with a state file succeeds only once its checkpoint shows
the workflow's end, else it is a ``RunError`` naming the steps left (never an empty
answer).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from concilium.agents import AgentReply, Budget, Message, Sampling, Usage, aclose, workflow_span
from concilium.agents.ledger import CallLedger, CallRecord, reset_ledger, use_ledger

from ._context import RunContext, current_path, gather_all, node_scope, run_scope
from ._events import Event, StreamEvent, Turn
from ._graph import Graph
from ._resume import (
    RunClaim,
    claim_run,
    corrupt_state,
    fingerprint_of,
    graph_fingerprint,
    is_corruption,
)
from ._store import StateStore, calls_path

RECURSION_LIMIT = 10_000  # rounds x 2 supersteps; LangGraph's default of 25 is too low


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        answer: the final answer (``None`` if the workflow produced none).
        transcript: one entry per agent turn, in order: who said what, in which
            round, and which other answers it saw.
        votes: the final vote (tally, winner, agreement) when there was one.
        details: pattern-specific extras (rounds, samples, nested results).
        calls: model calls answered by a model in this run (not replayed ones): for
            a resumed run, the requests this attempt sent.
        replayed: calls answered from the call record (resume).
        usage: tokens of the calls answered by a model in this run.
        total_calls: model calls the run cost in all, across its attempts: for a
            resumed run every call its call record holds under its run id (those of
            the steps restored from the checkpoint, the replayed ones and its new
            ones, each once), so it equals the uninterrupted run's ``calls``; for
            any other run, ``calls``.
        total_usage: the tokens of those calls (the uninterrupted run's ``usage``).
        elapsed_s: wall time of the run.
        tool_calls: tool calls run in this run (failed ones included).
        tools_replayed: tool calls answered from the call record (resume).
        partial: the run failed and this is what it did before (see
            ``partial_result``): usage and calls so far, and a transcript of the
            turns taken, read from their ``turn`` events (no prompt or tokens).
        error: why a partial run stopped.
    """

    answer: str | None
    run_id: str
    workflow: str
    transcript: list[Turn] = field(default_factory=list[Turn])
    votes: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict[str, Any])
    calls: int = 0
    replayed: int = 0
    usage: Usage = field(default_factory=Usage)
    total_calls: int = 0
    total_usage: Usage = field(default_factory=Usage)
    elapsed_s: float = 0.0
    tool_calls: int = 0
    tools_replayed: int = 0
    partial: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "partial": self.partial,
            "error": self.error,
            "workflow": self.workflow,
            "run_id": self.run_id,
            "calls": self.calls,
            "replayed": self.replayed,
            "tool_calls": self.tool_calls,
            "tools_replayed": self.tools_replayed,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "total_calls": self.total_calls,
            "total_usage": {
                "prompt_tokens": self.total_usage.prompt_tokens,
                "completion_tokens": self.total_usage.completion_tokens,
            },
            "elapsed_s": round(self.elapsed_s, 4),
            "votes": self.votes,
            "details": self.details,
            "transcript": self.transcript,
        }


def split_input(value: str | Sequence[Message]) -> dict[str, Any]:
    """A question string or chat messages -> the graph's input state."""
    if isinstance(value, str):
        return {"question": value, "messages": [{"role": "user", "content": value}]}
    messages = [dict(m) for m in value]
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        from concilium._errors import UserError

        raise UserError("the input messages have no user message; add {'role': 'user', ...}")
    content = users[-1].get("content")
    return {"question": content if isinstance(content, str) else str(content), "messages": messages}


async def invoke_graph(graph: Graph, given: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``graph`` inside the current run (a nested pattern), without its own
    checkpoint: its calls are keyed under the caller's node path, so a resume of
    the enclosing node replays them from the call record."""
    compiled = graph.compile(None)
    config = {"recursion_limit": RECURSION_LIMIT, "callbacks": None}
    with node_scope(graph.name):
        return dict(await compiled.ainvoke(dict(given), config))


async def run(
    graph: Graph,
    input: str | Sequence[Message],
    *,
    budget: Budget | None = None,
    run_id: str | None = None,
    state_path: str | Path | None = None,
    resume: bool = False,
    on_event: Callable[[Event], None] | None = None,
    record: CallRecord | None = None,
    deadline_s: float | None = None,
    fingerprint: str | None = None,
    force_resume: bool = False,
    store: StateStore | None = None,
    sampling: Sampling | None = None,
) -> RunResult:
    """Run a graph on a question (or chat messages) and return its ``RunResult``.

    Args:
        graph: a pattern or a hand-built ``Graph``.
        input: the question, or OpenAI-style chat messages.
        budget: max model calls / tokens / tool calls; exceeding it raises ``BudgetExceeded``.
        run_id: names the run; with ``state_path`` it is the checkpoint thread.
        state_path: SQLite file for LangGraph checkpoints (the call record goes
            beside it, see ``calls_path``).
        resume: continue run ``run_id`` from ``state_path`` instead of starting over.
        on_event: called with each progress event (node, call, round, vote).
        record: a call record to use (replay tests); default: fresh, or the file.
        deadline_s: seconds the whole run may take; past them its calls are
            cancelled and ``RunError`` names the deadline (``--deadline`` on the CLI).
        fingerprint: what identifies the workflow for resume checks (the CLI gives
            a hash of the workflow file's spec); default: the graph's structure.
        force_resume: resume even though the workflow or input changed since the
            run started (``--resume --force``).
        store: an open ``StateStore`` shared with other runs of this process, used
            instead of ``state_path`` (which opens and closes the file for this run).
        sampling: a seed, temperature or max_tokens imposed on every model call of
            the run (``concilium.agents.Sampling``; what ``serve api`` does with a
            request's ``seed``, ``temperature`` and ``max_tokens``).

    A run with ``state_path`` holds a lock on its run id while it runs (a second
    one on the same id fails at once) and records the fingerprints of its workflow
    and input: starting an id the file already holds, or resuming one whose
    workflow or input changed, is a ``UserError`` (see ``concilium.graphs._resume``).

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs.patterns import self_consistency
        >>> fake = FakeModel(fn=lambda agent, i, msgs: "so \\\\boxed{4}")
        >>> sc = self_consistency(Agent("solver", fake.spec()), samples=3)
        >>> result = run_sync(sc, "2+2?")
        >>> result.answer, result.votes["counts"]
        ('4', {'4': 3})
    """
    if store is not None and state_path is not None:
        from concilium._errors import UserError

        raise UserError(
            f"give the run state_path={str(state_path)!r} or store= (an open StateStore), not both"
        )
    if resume and ((state_path is None and store is None) or run_id is None):
        from concilium._errors import UserError

        raise UserError(
            "resume=True needs the state_path (or store) and run_id of the run to resume"
        )
    if deadline_s is not None and not 0 < deadline_s < math.inf:
        from concilium._errors import UserError

        raise UserError(f"deadline_s must be a finite number of seconds > 0, got {deadline_s!r}")
    run_id = run_id or uuid.uuid4().hex[:12]
    given = split_input(input)
    held = AsyncExitStack()  # the state file this run opens, and its claim
    try:
        if store is None and state_path is not None:
            store = await held.enter_async_context(StateStore(state_path))
        claim = _claim(graph, given, run_id, store, resume, fingerprint, force_resume)
        if claim is not None:
            held.callback(claim.release)
        if record is None:
            record = store.record.for_run(run_id) if store is not None else CallRecord()
        return await _run_claimed(
            graph, given, run_id, store, resume, budget, record, on_event, deadline_s, sampling
        )
    finally:
        await held.aclose()


async def _run_claimed(
    graph: Graph,
    given: dict[str, Any],
    run_id: str,
    store: StateStore | None,
    resume: bool,
    budget: Budget | None,
    record: CallRecord,
    on_event: Callable[[Event], None] | None,
    deadline_s: float | None,
    sampling: Sampling | None = None,
) -> RunResult:
    """The run itself, its state file (if any) open and its run id claimed."""
    # a state file's record keys carry the run id: other runs in it never replay these
    ledger = CallLedger(
        budget=budget,
        record=record,
        run_id=run_id if store else None,
        endpoints=graph.endpoints,
        sampling=sampling,
    )
    turns: list[Turn] = []  # the transcript so far, should the run fail

    def sink(event: Event) -> None:
        if event["type"] == "turn":
            entry = {k: v for k, v in event.items() if k not in ("type", "t")}
            turns.append(cast(Turn, entry))  # a Turn without prompt and tokens
        if on_event is not None:
            on_event(event)

    ctx = RunContext(run_id=run_id, workflow=graph.name, ledger=ledger, sink=sink)
    # The ledger's events are plain dicts of the Call*/Tool event types.
    ledger.on_event = cast(Callable[[dict[str, Any]], None], ctx.emit)
    started = time.perf_counter()
    token = use_ledger(ledger)
    try:
        with (
            run_scope(ctx),
            workflow_span(graph.name, **{"gen_ai.conversation.id": run_id}) as span,
        ):
            work = _invoke(graph, given, run_id, store, resume)
            final = await _within(deadline_s, work)
            if span.is_recording() and final.get("votes"):
                span.set_attribute("concilium.votes", str(final["votes"].get("counts")))
    except Exception as exc:
        done = _partial(ledger, graph.name, run_id, turns, started, exc, resume)
        setattr(exc, "partial", done)  # noqa: B010
        raise
    finally:
        reset_ledger(token)
    total_calls, total_usage = _cost(ledger, resume)
    return RunResult(
        answer=final.get("answer"),
        run_id=run_id,
        workflow=graph.name,
        transcript=list(final.get("transcript") or ()),
        votes=final.get("votes"),
        details=dict(final.get("details") or {}),
        calls=ledger.calls,
        replayed=ledger.replayed,
        usage=ledger.usage,
        total_calls=total_calls,
        total_usage=total_usage,
        elapsed_s=time.perf_counter() - started,
        tool_calls=ledger.tool_calls,
        tools_replayed=ledger.tools_replayed,
    )


def _cost(ledger: CallLedger, resume: bool) -> tuple[int, Usage]:
    """What a run cost in all (``RunResult.total_calls``, ``total_usage``): a resumed
    run's are the model calls in its call record, which holds each call of every
    attempt once (a step restored from the checkpoint, a replayed call, a new one);
    any other run's are the calls it sent."""
    return ledger.record.cost() if resume else (ledger.calls, ledger.usage)


async def _within(deadline_s: float | None, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await ``work``, cancelling it after ``deadline_s`` seconds with a ``RunError``."""
    if deadline_s is None:
        return await work
    scope = asyncio.timeout(deadline_s)
    try:
        async with scope:
            return await work
    except TimeoutError:
        if not scope.expired():
            raise  # a timeout of the run's own, not the deadline
        from concilium._errors import RunError

        raise RunError(
            f"the run passed its deadline of {deadline_s:g} s (deadline_s / --deadline) and "
            "was stopped, its calls in flight cancelled; raise the deadline, or make the "
            "workflow smaller or the servers faster"
        ) from None


def _partial(
    ledger: CallLedger,
    workflow: str,
    run_id: str,
    turns: list[Turn],
    started: float,
    exc: Exception,
    resume: bool,
) -> RunResult:
    from concilium.agents import redact

    total_calls, total_usage = _cost(ledger, resume)
    return RunResult(
        answer=None,
        run_id=run_id,
        workflow=workflow,
        transcript=list(turns),
        calls=ledger.calls,
        replayed=ledger.replayed,
        usage=ledger.usage,
        total_calls=total_calls,
        total_usage=total_usage,
        elapsed_s=time.perf_counter() - started,
        tool_calls=ledger.tool_calls,
        tools_replayed=ledger.tools_replayed,
        partial=True,
        error=redact(str(exc) or type(exc).__name__),
    )


def partial_result(error: BaseException) -> RunResult | None:
    """What a failed ``run`` did before ``error`` stopped it, or ``None`` when the
    error did not come out of a run. The result has ``partial=True``, the usage and
    calls so far, the turns taken and the ``error``'s message.

    Example:
        >>> from concilium import BudgetExceeded
        >>> from concilium.agents import Agent, Budget, FakeModel
        >>> from concilium.graphs.patterns import debate
        >>> fake = FakeModel(fn=lambda agent, i, msgs: "so \\\\boxed{4}")
        >>> pair = [Agent(name, fake.spec()) for name in ("ann", "bob")]
        >>> try:
        ...     run_sync(debate(pair, rounds=2), "2+2?", budget=Budget(max_calls=3))
        ... except BudgetExceeded as exc:
        ...     done = partial_result(exc)
        >>> done.partial, done.calls, [t["agent"] for t in done.transcript]
        (True, 3, ['ann', 'bob', 'ann'])
    """
    found = getattr(error, "partial", None)
    return found if isinstance(found, RunResult) else None


async def _invoke(
    graph: Graph, given: dict[str, Any], run_id: str, store: StateStore | None, resume: bool
) -> dict[str, Any]:
    config = {"recursion_limit": RECURSION_LIMIT, "configurable": {"thread_id": run_id}}
    if store is None:
        return dict(await graph.compile(None).ainvoke(given, config))
    try:
        compiled = graph.compile(store.checkpointer)
        if resume and (await _steps_left(compiled, config, store)) is not None:
            final = dict(await compiled.ainvoke(None, config))  # from its last checkpoint
        else:
            final = dict(await compiled.ainvoke(given, config))
        left = await _steps_left(compiled, config, store)
        if left:
            from concilium._errors import RunError

            raise RunError(
                f"run {run_id!r} stopped before the end of its workflow with steps left "
                f"({', '.join(left)}), so it has no answer; resume it (--resume, "
                "resume=True) to run them. If it stops there again, a node pauses the "
                "graph (LangGraph's interrupt), which a concilium run cannot answer"
            )
        return final
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        raise corrupt_state(store.path, exc) from None


async def _steps_left(compiled: Any, config: dict[str, Any], store: StateStore) -> list[str] | None:
    """The steps a checkpointed run has still to take (empty: it reached its end), or
    ``None`` when the state file holds no checkpoint of it.

    A step whose writes were saved is still a step left: the steps its writes start
    are only known once they are applied (LangGraph's ``next`` leaves it out, which
    once made a run killed between a step's saved writes and the next checkpoint look
    finished, with no answer)."""
    try:
        snapshot = await compiled.aget_state(config)
    except (ValueError, TypeError) as exc:  # a checkpoint that does not decode
        raise corrupt_state(store.path, exc) from None
    if snapshot.created_at is None:
        return None
    return [task.name for task in snapshot.tasks]


def _claim(
    graph: Graph,
    given: dict[str, Any],
    run_id: str,
    store: StateStore | None,
    resume: bool,
    fingerprint: str | None,
    force: bool,
) -> RunClaim | None:
    """Lock the run id of a run with a state file and check its fingerprints."""
    if store is None:
        return None
    return claim_run(
        store.path,
        calls_path(store.path),
        run_id,
        workflow=graph.name,
        workflow_fingerprint=graph_fingerprint(graph, fingerprint),
        input_fingerprint=fingerprint_of(given),
        resume=resume,
        force=force,
        db=store.record.connection,
    )


def run_sync(graph: Graph, input: str | Sequence[Message], **options: Any) -> RunResult:
    """``run`` for synchronous code: its own event loop, connections closed after.

    Example:
        >>> # result = run_sync(debate(agents, rounds=2), "What is 12 * 7?")
    """

    async def main() -> RunResult:
        try:
            return await run(graph, input, **options)
        finally:
            await aclose()

    return asyncio.run(main())


async def stream(
    graph: Graph, input: str | Sequence[Message], **options: Any
) -> AsyncIterator[StreamEvent]:
    """Run and yield progress events (``Event``) as they happen; the last is a
    ``ResultEvent`` (type ``result``) with the ``RunResult``.

    Example:
        >>> # async for event in stream(workflow, "What is 12 * 7?"): print(event["type"])
    """
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    task = asyncio.ensure_future(run(graph, input, on_event=queue.put_nowait, **options))
    task.add_done_callback(lambda _: queue.put_nowait(None))  # None: the run is over
    try:
        while True:
            event = await queue.get()
            if event is None:
                break
            yield event
        yield {"type": "result", "result": task.result()}
    finally:
        if not task.done():
            task.cancel()


@dataclass(frozen=True)
class GraphAgent:
    """A graph used where an agent is expected (a debater that is itself a
    self-consistency ensemble). ``run`` answers with the graph's final answer."""

    name: str
    graph: Graph

    async def run(
        self, messages: str | Sequence[Message], *, n: int = 1, key: str | None = None, **_: Any
    ) -> AgentReply:
        started = time.perf_counter()
        given = split_input(messages)
        key = key or self.name
        # A key from ``ctx.key`` starts with the current node path. The outermost
        # graph agent scopes its graph under the whole key (the keys state files of
        # one level of nesting hold); a nested one only under the part past the path,
        # so keys grow with the depth instead of doubling per level.
        outer = _nesting.get()
        prefix = f"{current_path()}/"
        scope = key[len(prefix) :] if outer and key.startswith(prefix) else key
        token = _nesting.set(outer + 1)
        try:
            results = await gather_all(
                [self._once(given, scope if n == 1 else f"{scope}#{i}") for i in range(n)]
            )
        finally:
            _nesting.reset(token)
        return AgentReply(
            agent=self.name,
            texts=tuple(str(r.get("text") or r.get("answer") or "") for r in results),
            # From the nested transcripts: a ledger delta would count siblings' calls too.
            usage=Usage(
                sum(e.get("prompt_tokens", 0) for r in results for e in r.get("transcript") or ()),
                sum(
                    e.get("completion_tokens", 0)
                    for r in results
                    for e in r.get("transcript") or ()
                ),
            ),
            latency_s=time.perf_counter() - started,
            model=f"graph:{self.graph.name}",
            parsed_all=tuple(
                {"votes": r.get("votes"), "transcript": r.get("transcript")} for r in results
            ),
        )

    async def _once(self, given: dict[str, Any], scope: str) -> dict[str, Any]:
        with node_scope(scope):
            return await invoke_graph(self.graph, given)


_nesting: contextvars.ContextVar[int] = contextvars.ContextVar("concilium_nesting", default=0)
"""How many graph agents the current code runs inside."""


def as_agent(graph: Graph, name: str | None = None) -> GraphAgent:
    """Wrap a graph so a pattern can use it as one of its agents."""
    return GraphAgent(name or graph.name, graph)
