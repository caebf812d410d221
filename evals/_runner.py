"""The eval runner: every (item, method) through ``concilium.graphs.run``, resumable.

Items run concurrently with at most ``concurrency`` in flight, so a server stays busy
without a queue of thousands of requests. Each finished (item, method) is one line of
``DIR/results.jsonl``; each run checkpoints its calls in ``DIR/state.db`` under its own run
id, so a rerun skips finished lines and resumes an interrupted run without repeating the
calls it made. The eval opens that file once (a ``StateStore``) and every run writes
through it: one connection per file, however many runs are in flight. A model error
marks the item failed; the eval goes on. Every row is a finished run's answer or a
failed row a rerun retries (a run that could not reach its end fails); a line a kill
cut short is skipped, its item run again, and the next line starts on a line of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from concilium._errors import UserError

from ._data import EvalRecord
from ._scorers import Scorer, default_scorer
from ._server_metrics import ServerWatch
from ._sweep import Method

if TYPE_CHECKING:
    from concilium.app import Backend, Session
    from concilium.graphs import RunResult, StateStore

__all__ = [
    "ItemResult",
    "SampleRecord",
    "sample_records",
    "evaluate",
    "DEFAULT_CONCURRENCY",
    "RESULTS_FILE",
    "STATE_FILE",
]

DEFAULT_CONCURRENCY = 16
"""Items in flight at once: enough to keep a batching server busy (each item may send
several requests at once), few enough not to flood its queue."""
RESULTS_FILE = "results.jsonl"
STATE_FILE = "state.db"
_STARTED_FILE = "started.jsonl"


class ItemResult(TypedDict):
    """One line of ``results.jsonl``: one item answered by one method."""

    id: str
    method: str
    answer: str | None
    gold: str
    correct: bool
    failed: bool
    error: str | None
    calls: int
    replayed: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    samples: list[str | None]
    choices: NotRequired[list[str] | None]
    transcript: list[dict[str, Any]]


class SampleRecord(TypedDict):
    """One sample of a sampling method, as an analysis of stored samples reads it
    (:func:`sample_records`): the turn's text and answer, the request it came from,
    its own completion tokens where known exactly, and, when the server returned
    logprobs, their mean and (from top-k logprobs) DeepConf's ``trace_confidences``;
    ``confidence`` is the trace confidence the method itself gave the sample
    (``confidence_consistency``'s DeepConf score), if any."""

    sample: int
    request: int | None
    text: str
    answer: str | None
    tokens: int | None
    mean_logprob: float | None
    trace_confidences: dict[str, float] | None
    token_confidences: NotRequired[list[float] | None]
    confidence: float | None


def _key(method: str, item: str) -> str:
    return json.dumps([method, item])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that item runs again (its calls are replayed)
    return rows


def _samples(transcript: Sequence[dict[str, Any]]) -> list[str | None]:
    """The sampled answers of a sampling method (the turns with a ``sample`` number)."""
    return [t.get("answer") for t in transcript if "sample" in t]


def sample_records(row: Mapping[str, Any]) -> list[SampleRecord]:
    """A row's samples in sample order, read from its transcript's sample turns.

    A row written before turns carried ``sample_tokens`` and ``mean_logprob`` gives
    ``None`` for them (its answers, text and requests are there as before).

    Example:
        >>> turns = [
        ...     {"sample": 1, "text": "b", "answer": "8", "sample_tokens": 3},
        ...     {"sample": 0, "text": "a", "answer": "7", "request": 0},
        ... ]
        >>> [(r["sample"], r["answer"], r["tokens"]) for r in sample_records({"transcript": turns})]
        [(0, '7', None), (1, '8', 3)]
    """
    turns = sorted((t for t in row.get("transcript") or () if "sample" in t), key=_sample_index)
    return [
        {
            "sample": int(t["sample"]),
            "request": t.get("request"),
            "text": str(t.get("text") or ""),
            "answer": t.get("answer"),
            "tokens": t.get("sample_tokens"),
            "mean_logprob": t.get("mean_logprob"),
            "trace_confidences": t.get("trace_confidences"),
            "token_confidences": t.get("token_confidences"),
            "confidence": t.get("confidence"),
        }
        for t in turns
    ]


def _sample_index(turn: Mapping[str, Any]) -> int:
    return int(turn["sample"])


class _Progress:
    """A tqdm bar on a terminal: items done, ETA, accuracy so far; nothing otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.right = self.done = 0
        self.bar: Any = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)

    def update(self, correct: bool) -> None:
        self.done += 1
        self.right += correct
        if self.bar is not None:
            self.bar.set_postfix(accuracy=f"{self.right / self.done:.3f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _one(
    method: Method,
    session: Session,
    store: StateStore,
    record: EvalRecord,
    scorer: Scorer,
    out_dir: Path,
    started: set[str],
) -> ItemResult:
    from concilium.agents import item_span
    from concilium.graphs import partial_result

    key = _key(method.name, record.id)
    resume = key in started
    if not resume:
        _append_line(out_dir / _STARTED_FILE, key)
        started.add(key)
    begin = time.monotonic()
    answer: str | None = None
    error: str | None = None
    transcript: list[dict[str, Any]] = []
    calls = replayed = prompt_tokens = completion_tokens = 0
    try:
        # the method's own spec (its swept values) is the fingerprint, and its budget;
        # each run is a trace of its own, linked to the eval's span
        with item_span(record.id, method.name):
            result = await session.run(
                method.workflow, record.question, run_id=key, resume=resume, store=store
            )
    except UserError:
        raise
    except Exception as exc:  # a model error fails this item, not the eval
        error = f"{type(exc).__name__}: {exc}"
        done = partial_result(exc)
        if done is not None:
            transcript = [dict(t) for t in done.transcript]
            calls, replayed, prompt_tokens, completion_tokens = _cost(done)
    else:
        answer = result.answer
        transcript = [dict(t) for t in result.transcript]
        calls, replayed, prompt_tokens, completion_tokens = _cost(result)
    correct = answer is not None and scorer(answer, record.answer, record.choices)
    return {
        "id": record.id,
        "method": method.name,
        "answer": answer,
        "gold": record.answer,
        "correct": bool(correct),
        "failed": error is not None,
        "error": error,
        "calls": calls,
        "replayed": replayed,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "wall_s": round(time.monotonic() - begin, 6),
        "samples": _samples(transcript),
        "choices": list(record.choices) if record.choices else None,  # rescoring needs them
        "transcript": transcript,
    }


def _cost(result: RunResult) -> tuple[int, int, int, int]:
    """A row's ``calls``, ``replayed``, ``prompt_tokens`` and ``completion_tokens``: a
    resumed item costs what it cost. ``calls`` are the requests this attempt sent;
    ``replayed`` every other call the item made in an earlier attempt (answered from
    the call record now, or a step restored from the checkpoint); the tokens are
    those of all of them (``RunResult.total_usage``), so ``calls + replayed`` and the
    tokens are what the uninterrupted run reports."""
    usage = result.total_usage
    return (
        result.calls,
        result.total_calls - result.calls,
        usage.prompt_tokens,
        usage.completion_tokens,
    )


async def evaluate(
    records: Sequence[EvalRecord],
    methods: Sequence[Method],
    backend: Session | Backend | str | None,
    out_dir: str | Path,
    *,
    scorer: Scorer | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
    servers: dict[str, Any] | None = None,
) -> list[ItemResult]:
    """Run every method on every record; return one result per (record, method).

    Finished pairs found in ``out_dir/results.jsonl`` are not run again.

    Args:
        records: the items.
        methods: the workflows to compare (see ``build_methods``).
        backend: where model calls go (``"sim"``, ``"local"``, a URL, a ``Backend``, or
            ``None`` for each model's own server), or an open ``concilium.app.Session``
            to run in (its servers are kept; the caller closes it).
        out_dir: the run folder (created); rerun with the same folder to resume.
        scorer: decides correctness; default by the gold answers (``default_scorer``).
        concurrency: (item, method) runs in flight at most.
        progress: show a progress bar; default: when stderr is a terminal.
        on_result: called with each new result.
        servers: a dict filled with where the calls went: each bound server's
            ``/metrics`` read before the first item and after the last, the growth of
            its counters (requests, prefix-cache hits and queries); the servers' view,
            other clients' traffic included. Nothing is read when no item runs.

    Example:
        >>> # asyncio.run(evaluate(load_records("d.jsonl"), methods, Backend.parse("sim"), "out"))
    """
    from concilium.app import Session
    from concilium.graphs import StateStore

    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1, got {concurrency}")
    if not methods:
        raise UserError("no methods to evaluate; give at least one workflow file")
    out = _prepare(Path(out_dir))
    scorer = scorer or default_scorer([r.answer for r in records], any(r.choices for r in records))
    wanted = {_key(m.name, r.id) for m in methods for r in records}
    finished: dict[str, ItemResult] = {}
    for row in _read_jsonl(out / RESULTS_FILE):
        key = _key(str(row.get("method")), str(row.get("id")))
        if key in wanted:  # a later line of a key (a retry) replaces an earlier one
            finished[key] = cast(ItemResult, row)  # our own file's lines
    # a failed row is not an answer: a rerun tries its item again (resuming its calls)
    finished = {key: row for key, row in finished.items() if not row.get("failed")}
    started = {line.strip() for line in _read_jsonl_lines(out / _STARTED_FILE)}
    todo = [
        (i, r) for r in records for i, m in enumerate(methods) if _key(m.name, r.id) not in finished
    ]
    if not todo:
        # a rerun with nothing left binds no backend: --backend local would start the
        # embedded engine (most of a minute) to send no call
        if servers is not None:
            servers.update(ServerWatch().section)
        return [finished[_key(m.name, r.id)] for m in methods for r in records]
    bar = _Progress(len(todo), sys.stderr.isatty() if progress is None else progress)
    watch = ServerWatch()
    limit = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    try:
        # the session owns the state file (one connection for every run), the backend's
        # servers and the connections; each method's workflow is bound to it in memory,
        # so what a sweep changed is what runs
        async with contextlib.AsyncExitStack() as held:
            session = (
                backend
                if isinstance(backend, Session)  # the caller's, which the caller closes
                else await held.enter_async_context(Session(backend))
            )
            store = await held.enter_async_context(StateStore(out / STATE_FILE))
            bound = [await session.bind(m.workflow) for m in methods]
            runs = [Method(m.name, wf) for m, wf in zip(methods, bound, strict=True)]
            if servers is not None:
                await watch.start(bound)

            async def work(index: int, record: EvalRecord) -> None:
                async with limit:
                    row = await _one(runs[index], session, store, record, scorer, out, started)
                async with lock:
                    line = json.dumps(row, ensure_ascii=False, default=str)
                    _append_line(out / RESULTS_FILE, line)
                    finished[_key(row["method"], row["id"])] = row
                    bar.update(row["correct"])
                if on_result is not None:
                    on_result(row)

            async with asyncio.TaskGroup() as group:
                for index, record in todo:
                    group.create_task(work(index, record))
            if servers is not None:  # before the session stops the servers it started
                await watch.stop()
                servers.update(watch.section)
    except* UserError as group:
        raise group.exceptions[0] from None
    finally:
        bar.close()
    return [finished[_key(m.name, r.id)] for m in methods for r in records]


def _prepare(out: Path) -> Path:
    """Create the run folder (a few local file operations, before any I/O waits)."""
    out.mkdir(parents=True, exist_ok=True)
    return out


def _append_line(path: Path, line: str) -> None:
    """Append ``line`` to a file of lines. A last line a kill cut short (no newline)
    is ended first: glued to it, this line would be unreadable too, and lost."""
    with path.open("a+b") as handle:  # writes go to the end; reads may seek
        end = handle.seek(0, 2)
        if end:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                line = "\n" + line
        handle.write(f"{line}\n".encode())


def _read_jsonl_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
