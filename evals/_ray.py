"""``concilium eval --ray``: the same eval run by a pool of Ray workers.

The orchestration is async I/O, so one process drives a whole model server; when an
eval outgrows one machine, a pool of workers shares it. The rules:

* **The driver owns the eval folder.** This process holds the queue of unfinished
  (item, method) runs, the bound on runs in flight (``concurrency``) and the files:
  it is the one writer of ``DIR/results.jsonl`` and of the call record beside
  ``DIR/state.db``.
* **Work goes where there is room.** Each of ``concurrency`` lanes takes the next run
  from the queue and gives it to the live worker with the fewest runs in flight, so
  the bound is split over the workers as they free up: a slow worker gets fewer runs,
  a lost one none, and no run waits behind a slow shard.
* **Results stream back.** A worker (an async Ray actor, one per CPU slot) builds the
  methods once and runs each run through the local runner's own code, in one
  ``Session`` on the backend URL; it streams back each model or tool call the moment
  it is recorded and the run's row at the end. The driver writes each call into the
  call record under the run's id and appends the row to ``results.jsonl`` at once.
* **A lost worker loses only its calls in flight.** A run is handed over with the
  calls the record already holds for it, which it replays. When a worker dies its
  runs go back to the queue and other workers resume them; the eval fails only when
  no worker is left, and a rerun with the same folder resumes it (finished rows are
  kept, recorded calls replayed). The record keys are the local runner's, so a Ray
  eval and a local one resume each other's folders.
* **Workers trace like a local eval.** When the driver sends spans to an OTLP
  collector (``otlp_endpoint``, or its ``OTEL_EXPORTER_OTLP_*`` variables), every
  worker gets the driver's ``OTEL_*`` variables and the endpoint and exports its own
  spans there: each run is an ``eval_item`` trace linked to the span current in the
  driver (the CLI's ``eval DATA``), as in a local eval. A worker flushes its spans
  when it closes; one that dies loses the spans it had not yet sent.

Ray is imported only here, when the option is used; install it with
``pip install 'concilium[ray]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from opentelemetry import trace

from concilium._errors import ConciliumError, RunError, UserError
from concilium.agents import Message
from concilium.agents.ledger import CallRecord, SqliteCallRecord
from concilium.app import Backend, Session
from concilium.graphs import RunResult, StateStore
from concilium.graphs.workflows import Workflow

from ._data import EvalRecord
from ._runner import (
    DEFAULT_CONCURRENCY,
    RESULTS_FILE,
    STATE_FILE,
    ItemResult,
    _append_line,
    _key,
    _one,
    _Progress,
    _read_jsonl,
)
from ._scorers import Scorer, default_scorer
from ._server_metrics import ServerWatch
from ._sweep import Method, Setting, build_methods

__all__ = ["evaluate_on_ray"]

_INSTALL_HINT = "concilium eval --ray needs Ray: pip install 'concilium[ray]'"
_CLOSE_S = 30.0
"""How long a worker may take to close its session and scratch folder at the end."""

Job = tuple[int, EvalRecord]  # (method index, item)
Call = tuple[str, dict[str, Any]]  # (record key, response) of one finished call


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(_INSTALL_HINT) from None
    return ray


# ------------------------------------------------------------------ the worker

# The runner's row code (``_one``) is handed a session, not a call record: the call
# record of the run in progress travels beside it, in the run's own task context.
_RUN_CALLS: ContextVar[CallRecord] = ContextVar("concilium_ray_run_calls")


class _Relay(CallRecord):
    """One run's call record on a worker: the calls the driver holds for the run
    (replayed), and each new call queued for the driver as soon as it is recorded."""

    def __init__(self, recorded: dict[str, dict[str, Any]], sent: asyncio.Queue[Call | None]):
        super().__init__()
        for digest, response in recorded.items():
            super().put(digest, response)
        self._sent = sent

    def put(self, digest: str, response: dict[str, Any]) -> None:
        super().put(digest, response)
        self._sent.put_nowait((digest, response))


class _RelaySession(Session):
    """A worker's session: each run records into its own ``_Relay``."""

    async def run(
        self, workflow: Workflow, input: str | Sequence[Message], **options: Any
    ) -> RunResult:
        options.setdefault("record", _RUN_CALLS.get())
        return await super().run(workflow, input, **options)


@dataclass(frozen=True)
class _Tracing:
    """What a worker needs to trace as the driver does: the driver's ``OTEL_*``
    variables (endpoint, headers, timeouts), its ``--otlp-endpoint`` if given, and the
    span its runs link to (trace id, span id, flags of the driver's current span)."""

    env: dict[str, str]
    endpoint: str | None
    link: tuple[int, int, int] | None

    @classmethod
    def of_driver(cls, endpoint: str | None) -> _Tracing | None:
        """The driver's tracing, or ``None`` when it sends no spans to a collector."""
        env = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
        named = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        if not (endpoint or any(env.get(name) for name in named)):
            return None
        current = trace.get_current_span().get_span_context()
        link = (current.trace_id, current.span_id, int(current.trace_flags))
        return cls(env, endpoint, link if current.is_valid else None)

    def start(self) -> Any:
        """Install this process's tracer provider (a worker's process is its own)."""
        from concilium.agents import configure_tracing

        os.environ.update(self.env)  # the exporter reads headers and timeouts from here
        return configure_tracing(otlp_endpoint=self.endpoint)

    def linked(self) -> Any:
        """A context in which ``item_span`` links each run to the driver's span."""
        if self.link is None:
            return contextlib.nullcontext()
        trace_id, span_id, flags = self.link
        driver = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))  # fmt: skip
        return trace.use_span(trace.NonRecordingSpan(driver))


class _Worker:
    """A Ray actor: runs the (item, method) runs it is given, one session for all."""

    def __init__(
        self,
        workflows: list[str],
        settings: list[Setting],
        backend: Backend,
        scorer: Scorer,
        tracing: _Tracing | None = None,
    ) -> None:
        self.tracing = tracing
        self.provider = tracing.start() if tracing else None
        self.methods = build_methods(workflows, settings)
        self.backend = backend
        self.scorer = scorer
        self.scratch = Path(tempfile.mkdtemp(prefix="concilium-ray-"))
        self.held = AsyncExitStack()
        self.opened: tuple[Session, StateStore, list[Method]] | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> tuple[Session, StateStore, list[Method]]:
        async with self._opening:  # the first runs arrive together: open once
            if self.opened is None:
                session = await self.held.enter_async_context(_RelaySession(self.backend))
                # a scratch state file: record keys carry the run id, as in a local eval
                store = await self.held.enter_async_context(StateStore(self.scratch / STATE_FILE))
                bound = [Method(m.name, await session.bind(m.workflow)) for m in self.methods]
                self.opened = session, store, bound
        return self.opened

    async def run(
        self, index: int, record: EvalRecord, recorded: dict[str, dict[str, Any]]
    ) -> AsyncIterator[tuple[str, Any]]:
        """Run method ``index`` on ``record``, replaying ``recorded``; yield
        ``("call", (digest, response))`` per new call, then ``("row", row)``."""
        session, store, bound = await self._open()
        sent: asyncio.Queue[Call | None] = asyncio.Queue()
        method = bound[index]

        async def one() -> ItemResult:
            _RUN_CALLS.set(_Relay(recorded, sent))
            # resumed: the driver's calls for this run are replayed, new ones made
            started = {_key(method.name, record.id)}
            with self.tracing.linked() if self.tracing else contextlib.nullcontext():
                return await _one(method, session, store, record, self.scorer, self.scratch, started)  # fmt: skip

        task = asyncio.create_task(one())
        task.add_done_callback(lambda _: sent.put_nowait(None))
        try:
            while (call := await sent.get()) is not None:
                yield "call", call
            yield "row", task.result()  # a UserError of the run is raised here
        finally:
            task.cancel()  # the driver went away: this run's calls stop too

    async def close(self) -> None:
        await self.held.aclose()
        self.opened = None
        shutil.rmtree(self.scratch, ignore_errors=True)  # it holds prompts and replies
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)  # send the spans still batched


# ------------------------------------------------------------------ the driver


class _Pool:
    """The workers that are up, and the runs each has in flight. A worker joins when
    its actor has started (one that waits for a node gets no runs meanwhile) and
    leaves when it fails."""

    def __init__(self, ray: Any, workers: list[Any]) -> None:
        self.ray = ray
        self.workers = workers
        self.load: dict[int, int] = {}  # worker -> runs in flight, for the workers up
        self.starting = set(range(len(workers)))
        self.changed = asyncio.Condition()
        self.lost: str | None = None

    async def start(self, worker: int) -> None:
        try:
            await self.workers[worker].__ray_ready__.remote()
        except self.ray.exceptions.RayError as exc:  # it could not start: say why, if none can
            self.lost = _first_line(exc)
        else:
            self.load[worker] = 0
        async with self.changed:
            self.starting.discard(worker)
            self.changed.notify_all()

    async def take(self) -> int:
        """The worker with the fewest runs in flight (one more counted)."""
        async with self.changed:
            await self.changed.wait_for(lambda: bool(self.load or not self.starting))
        if not self.load:
            raise RunError(
                f"every Ray worker of the eval is gone (the last: {self.lost}); rerun the same "
                "command with the same --out to resume: finished rows and recorded calls are kept"
            )
        worker = min(self.load, key=self.load.__getitem__)
        self.load[worker] += 1
        return worker

    def give_back(self, worker: int) -> None:
        if worker in self.load:
            self.load[worker] -= 1

    def lose(self, worker: int, error: BaseException) -> None:
        """A worker that failed is dropped (and killed, should it still run)."""
        if self.load.pop(worker, None) is not None:
            self.lost = _first_line(error)
            self.ray.kill(self.workers[worker])

    async def close(self) -> None:
        """Each worker closes its session and scratch folder, then goes."""
        closing = [self.workers[w].close.remote() for w in self.load]
        if closing:
            await asyncio.to_thread(self.ray.wait, closing, num_returns=len(closing), timeout=_CLOSE_S)  # fmt: skip
        for worker in self.workers:
            self.ray.kill(worker)


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


class _Driver:
    """The eval folder's one writer, and the lanes that hand runs to the workers."""

    def __init__(
        self,
        ray: Any,
        out: Path,
        names: list[str],
        todo: list[Job],
        finished: dict[str, ItemResult],
        on_result: Callable[[ItemResult], None] | None,
    ) -> None:
        self.ray = ray
        self.out = out
        self.names = names
        self.finished = finished
        self.on_result = on_result
        self.left = len(todo)
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue()
        for job in todo:
            self.queue.put_nowait(job)
        self.calls: SqliteCallRecord | None = None
        self.bar = _Progress(len(todo), sys.stderr.isatty())
        self.lanes = 0

    async def run(self, workers: list[Any], lanes: int) -> None:
        pool = _Pool(self.ray, workers)
        self.lanes = lanes
        try:
            async with StateStore(self.out / STATE_FILE) as store:
                self.calls = store.record
                async with asyncio.TaskGroup() as group:
                    for worker in range(len(workers)):
                        group.create_task(pool.start(worker))
                    for _ in range(lanes):
                        group.create_task(self._lane(pool))
        except* ConciliumError as group:
            raise group.exceptions[0] from None
        finally:
            self.bar.close()
            await pool.close()

    async def _lane(self, pool: _Pool) -> None:
        errors = self.ray.exceptions
        while (job := await self.queue.get()) is not None:
            worker = await pool.take()
            try:
                row = await self._hand_over(pool.workers[worker], job)
            except errors.RayTaskError as exc:  # the run raised (a UserError): stop the eval
                if isinstance(exc.cause, ConciliumError):
                    raise exc.cause from None
                raise
            except errors.RayError as exc:  # the worker died or cannot be reached
                pool.lose(worker, exc)
                self.queue.put_nowait(job)  # another worker resumes it
                continue
            finally:
                pool.give_back(worker)
            self._finish(row)

    async def _hand_over(self, worker: Any, job: Job) -> ItemResult:
        """Give ``job`` to ``worker`` with the calls recorded for it; record its new
        calls as they come and return its row."""
        assert self.calls is not None
        index, record = job
        key = _key(self.names[index], record.id)
        view = self.calls.for_run(key)
        async for ref in worker.run.remote(index, record, _recorded(self.calls, key)):
            kind, value = await ref
            if kind == "call":
                view.put(*value)
            else:
                return cast(ItemResult, value)
        raise RunError(f"a Ray worker ended run {key} without its result")

    def _finish(self, row: ItemResult) -> None:
        _append_line(self.out / RESULTS_FILE, json.dumps(row, ensure_ascii=False, default=str))
        self.finished[_key(row["method"], row["id"])] = row
        self.bar.update(row["correct"])
        if self.on_result is not None:
            self.on_result(row)
        self.left -= 1
        if not self.left:  # the last row: every lane stops
            for _ in range(self.lanes):
                self.queue.put_nowait(None)


def _recorded(calls: SqliteCallRecord, key: str) -> dict[str, dict[str, Any]]:
    """The calls the record holds for run ``key`` (what its worker replays)."""
    rows = calls.connection.execute(
        "SELECT digest, response FROM concilium_calls WHERE run_id = ?", (key,)
    ).fetchall()
    return {digest: json.loads(response) for digest, response in rows}


def evaluate_on_ray(
    records: Sequence[EvalRecord],
    workflows: Sequence[str | Path],
    settings: Sequence[Setting],
    backend: Backend,
    out_dir: str | Path,
    *,
    address: str | None = "auto",
    scorer: Scorer | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    shards: int | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
    otlp_endpoint: str | None = None,
    servers: dict[str, Any] | None = None,
) -> list[ItemResult]:
    """Run the eval on a pool of Ray workers; return the rows a local run would.

    Args:
        records: the items.
        workflows: the workflow files (read by every worker: a path the workers see).
        settings: the ``--set`` sweeps (see ``parse_setting``).
        backend: a server every worker reaches (a URL, or the workflows' own
            ``api_base``); ``sim`` and ``local`` start a server per process, so they
            are refused.
        out_dir: the run folder; ``results.jsonl`` there is read (resume) and appended.
        address: the Ray cluster (``auto``, ``HOST:PORT``, ``ray://...``); ignored when
            this process is already connected (``ray.init`` was called).
        scorer: decides correctness; default by the gold answers.
        concurrency: (item, method) runs in flight over all workers together.
        shards: Ray workers (actors, one CPU each); default one per CPU of the
            cluster, at most ``concurrency`` and one per run to do.
        on_result: called in this process with each new row, as it is appended.
        otlp_endpoint: an OTLP/HTTP collector every worker sends its spans to (the
            CLI's ``--otlp-endpoint``); without it, the collector this process's
            ``OTEL_EXPORTER_OTLP_*`` variables name, if any. Each run is then an
            ``eval_item`` trace linked to the span current here when the eval starts.
        servers: filled as ``evaluate`` fills it (where the calls went): this process
            reads the servers the workers send to, before the first run and after the last.

    Example:
        >>> # evaluate_on_ray(records, ["sc.yaml"], [], Backend.parse(url), "out", address="auto")
    """
    if backend.kind in ("sim", "local"):
        raise UserError(
            f"--ray with --backend {backend.kind}: every Ray worker would start its own server; "
            "start one the workers reach (concilium serve sim, or your vLLM) and pass its URL "
            "as --backend"
        )
    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1, got {concurrency}")
    ray = _import_ray()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scorer = scorer or default_scorer([r.answer for r in records], any(r.choices for r in records))
    methods = build_methods(workflows, settings)  # fails here, not on a worker, if a file is bad
    names = [m.name for m in methods]
    finished = _finished(out / RESULTS_FILE, names, records)
    todo = [(i, r) for r in records for i, n in enumerate(names) if _key(n, r.id) not in finished]
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            count = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
            count = max(1, min(count, concurrency, len(todo)))
            # a file as a path every worker reads; app.py:graph targets as given
            files = [str(Path(w).resolve()) if Path(w).exists() else str(w) for w in workflows]
            actor = ray.remote(_Worker)
            tracing = _Tracing.of_driver(otlp_endpoint)
            tag = uuid.uuid4().hex[:8]  # named, so an operator (or a test) finds them
            workers = [
                actor.options(
                    name=f"concilium-eval-{tag}-{i}", num_cpus=1, max_concurrency=concurrency + 1
                ).remote(files, list(settings), backend, scorer, tracing)
                for i in range(count)
            ]
            driver = _Driver(ray, out, names, todo, finished, on_result)
            watch = ServerWatch()

            async def drive() -> None:
                if servers is not None:  # the workers' servers: the URL, or the files' own
                    urls = [backend.url] if backend.url else []
                    await watch.start([] if urls else [m.workflow for m in methods], urls)
                await driver.run(workers, min(concurrency, len(todo)))
                if servers is not None:
                    await watch.stop()
                    servers.update(watch.section)

            asyncio.run(drive())
        finally:
            if started_here:
                ray.shutdown()
    elif servers is not None:
        servers.update(ServerWatch().section)
    return [finished[_key(n, r.id)] for n in names for r in records]


def _finished(
    path: Path, names: Sequence[str], records: Sequence[EvalRecord]
) -> dict[str, ItemResult]:
    wanted = {_key(n, r.id) for n in names for r in records}
    found: dict[str, ItemResult] = {}
    for row in _read_jsonl(path):  # a line cut by a kill is skipped: that run goes again
        key = _key(str(row.get("method")), str(row.get("id")))
        if key in wanted:  # a later line of a key (a retry) replaces an earlier one
            found[key] = cast(ItemResult, row)
    # a failed row is not an answer: a rerun tries its item again (resuming its calls)
    return {key: row for key, row in found.items() if not row.get("failed")}
