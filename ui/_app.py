"""The web UI: start a workflow, watch it over server-sent events, read past runs."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse

from concilium.app import Session
from concilium.examples import FOLDER as _EXAMPLES  # shipped as package data

from ._evals import EvalFolder, find_evals, item_record
from ._history import RunHistory
from ._render import EventLog, render_page
from ._research import research_sources


def find_workflows(dirs: Sequence[str | Path] = ()) -> dict[str, Path]:
    """Workflow files by name: the examples shipped in the repo, then ``dirs``."""
    found: dict[str, Path] = {}
    for folder in [_EXAMPLES, *map(Path, dirs)]:
        if folder.is_file():
            found[folder.stem] = folder
        elif folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found[path.stem] = path
    return found


class _LiveRun:
    def __init__(self, record: dict[str, Any]):
        self.record = record
        self.changed = asyncio.Event()
        self.done = False
        self.error: str | None = None

    def add(self, event: dict[str, Any]) -> None:
        self.record["events"].append(event)
        self.changed.set()


async def _execute(
    live: _LiveRun, path: Path, session: Session, history: RunHistory | None
) -> None:
    from concilium.app import load

    log = EventLog()
    log.events = live.record["events"]  # the page streams this list as it grows

    def on_event(event: Any) -> None:
        log(event)
        live.changed.set()

    try:
        # built for this run (the file may have been edited since the last one), bound
        # to the UI's session: its engine or servers and connections outlive every run
        workflow = load(path)
        result = await session.run(workflow, live.record["question"], on_event=on_event)
        done = result.to_json()
        # a research run: the cited passages, read now while the store is at hand
        sources = await asyncio.to_thread(research_sources, done, path)
        if sources is not None:
            live.record["sources"] = sources
        live.record["result"] = done
        live.record["run_id"] = live.record["run_id"]  # the UI's id, not the runtime's
        # History is written (and read, below) in a worker thread: while another process
        # (concilium run --state, an eval) holds the file's write lock, it waits there, up
        # to SQLite's busy timeout, instead of stopping every page and live stream
        if history is not None:
            await asyncio.to_thread(history.save, live.record)
    except Exception as exc:  # shown on the page and kept in History; the server keeps serving
        live.error = live.record["error"] = f"{type(exc).__name__}: {exc}"
        if history is not None:
            await asyncio.to_thread(history.save, live.record)
    finally:
        live.done = True
        live.changed.set()


def _key_guard(api_key: str | None) -> Callable[[Request], str]:
    def check_key(request: Request) -> str:
        """Refuse a request without the key; return the ``?key=`` a browser came with
        (empty otherwise), which the page then carries in its links, forms and streams."""
        # off 127.0.0.1: the key as a bearer token, or ?key= for a browser
        if not api_key:
            return ""
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        in_url = request.query_params.get("key", "")
        if not hmac.compare_digest((given or in_url).encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key; add ?key=<key> to the address")
        return in_url if in_url == api_key else ""

    return check_key


def _query(key: str, sep: str = "?") -> str:
    """``?key=...`` (or ``&key=...``) to add to a page's own URLs, or nothing."""
    return f"{sep}key={quote(key, safe='')}" if key else ""


async def _sse(run: _LiveRun) -> AsyncIterator[bytes]:
    """The run's events from the first, then its result (or failure) as server-sent events."""
    sent = 0
    while True:
        run.changed.clear()
        evs = run.record["events"]
        for event in evs[sent:]:
            yield f"event: event\ndata: {json.dumps(event)}\n\n".encode()
        sent = len(evs)
        if run.done:
            break
        await run.changed.wait()
    if run.record.get("sources") is not None:
        yield f"event: sources\ndata: {json.dumps(run.record['sources'])}\n\n".encode()
    if run.error is not None:
        yield f"event: failed\ndata: {json.dumps(run.error)}\n\n".encode()
    else:
        yield f"event: result\ndata: {json.dumps(run.record['result'])}\n\n".encode()


def add_ui(
    app: FastAPI,
    *,
    session: Session | None = None,
    state: str | Path | None = None,
    workflow_dirs: Sequence[str | Path] = (),
    prefix: str = "",
    api_key: str | None = None,
    eval_dirs: Sequence[str | Path] = (),
) -> FastAPI:
    """Add the UI's pages to ``app`` under ``prefix`` (``concilium ui``, ``serve api --ui``).

    ``session``: where runs started from the page go (``concilium.app.Session``; its
    owner closes it); default: each model's own server. ``eval_dirs``: ``concilium
    eval`` output folders (or folders of them) for the Evaluation page.

    Example:
        >>> from concilium.serving import create_app
        >>> app = add_ui(create_app({}, bind=("127.0.0.1", 8000)), prefix="/ui")
        >>> any(getattr(r, "path", "") == "/ui/history" for r in app.routes)
        True
    """
    history = RunHistory(state) if state else None
    workflows = find_workflows(workflow_dirs)
    session = session or Session()
    evals = find_evals(eval_dirs)

    def page(mode: str, title: str, key: str, **context: Any) -> HTMLResponse:
        # every page links the Evaluation page when there is one
        html = render_page(mode, title, prefix=prefix, key=key, has_evals=bool(evals), **context)
        # a key in the address goes in no Referer to another site ("no-referrer" would make
        # chromium send Origin: null with the start form, which the origin check refuses)
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}
        return HTMLResponse(html, headers=headers)

    key_of = Depends(_key_guard(api_key))
    _add_run_pages(app, workflows, session, history, prefix=prefix, page=page, key_of=key_of)
    _add_eval_pages(app, evals, prefix=prefix, page=page, key_of=key_of)
    return app


class _Page(Protocol):
    def __call__(self, mode: str, title: str, key: str, **context: Any) -> HTMLResponse: ...


def _add_run_pages(
    app: FastAPI,
    workflows: dict[str, Path],
    session: Session,
    history: RunHistory | None,
    *,
    prefix: str,
    page: _Page,
    key_of: Any,
) -> None:
    """The Run page, a run's live view and its event stream, History and side by side."""
    live: dict[str, _LiveRun] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def record_of(run_id: str) -> dict[str, Any]:
        if run_id in live:
            return live[run_id].record
        found = await asyncio.to_thread(history.get, run_id) if history else None
        if found is None:
            raise HTTPException(404, f"no run {run_id!r}; see the History page")
        return found

    @app.get(prefix + "/", response_class=HTMLResponse)
    async def start_page(key: str = key_of) -> HTMLResponse:
        return page("start", "Run a workflow", key, workflows=workflows)

    @app.post(prefix + "/runs")
    async def start(request: Request, key: str = key_of) -> RedirectResponse:
        # a plain urlencoded form: no python-multipart needed for two fields
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        workflow = form.get("workflow", [""])[0]
        question = form.get("question", [""])[0].strip()
        if not question:
            raise HTTPException(400, "type a question first")
        if workflow not in workflows:
            raise HTTPException(400, f"no workflow {workflow!r}; choose one of {sorted(workflows)}")
        run_id = uuid.uuid4().hex[:12]
        record: dict[str, Any] = {
            "run_id": run_id,
            "workflow": workflow,
            "question": question,
            "started": time.time(),
            "events": [],
            "result": None,
        }
        live[run_id] = _LiveRun(record)
        task = asyncio.create_task(_execute(live[run_id], workflows[workflow], session, history))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return RedirectResponse(f"{prefix}/runs/{run_id}{_query(key)}", status_code=303)

    @app.get(prefix + "/runs/{run_id}", response_class=HTMLResponse)
    async def view(run_id: str, key: str = key_of) -> HTMLResponse:
        rec = await record_of(run_id)
        running = run_id in live and not live[run_id].done
        shown = {**rec, "events": []} if running else rec
        return page("view", f"{rec['workflow']}: run {run_id}", key, records=[shown], live=running)

    @app.get(prefix + "/runs/{run_id}/events", dependencies=[key_of])
    async def events(run_id: str) -> StreamingResponse:
        if run_id not in live:
            raise HTTPException(404, f"run {run_id!r} is not running here")
        return StreamingResponse(_sse(live[run_id]), media_type="text/event-stream")

    @app.get(prefix + "/history", response_class=HTMLResponse)
    async def history_page(key: str = key_of) -> HTMLResponse:
        runs = await asyncio.to_thread(history.list) if history else []
        return page("history", "History", key, runs=runs)

    @app.get(prefix + "/compare", response_class=HTMLResponse)
    async def compare(request: Request, key: str = key_of) -> HTMLResponse:
        ids = request.query_params.getlist("run")[:2]
        if not ids:
            raise HTTPException(400, "pick two runs on the History page (?run=A&run=B)")
        return page("view", "Side by side", key, records=[await record_of(i) for i in ids])


def _add_eval_pages(
    app: FastAPI, evals: list[EvalFolder], *, prefix: str, page: _Page, key_of: Any
) -> None:
    """The Evaluation page, each folder's plot, and one page per item and method."""

    def folder(index: int) -> EvalFolder:
        if not 0 <= index < len(evals):
            raise HTTPException(
                404, f"no eval folder #{index}; there are {len(evals)} (see /evals)"
            )
        return evals[index]

    @app.get(prefix + "/evals", response_class=HTMLResponse)
    async def evals_page(key: str = key_of) -> HTMLResponse:
        return page("evals", "Evaluation", key, evals=evals)

    @app.get(prefix + "/evals/{index}/plot.svg", dependencies=[key_of])
    async def eval_plot(index: int) -> FileResponse:
        plot = folder(index).plot()  # only the folder's own plot file, never a path from the URL
        if plot is None:
            raise HTTPException(404, "this eval folder has no accuracy_vs_tokens.svg")
        return FileResponse(plot, media_type="image/svg+xml")

    @app.get(prefix + "/evals/{index}/items/{method}/{item}", response_class=HTMLResponse)
    async def eval_item(index: int, method: str, item: str, key: str = key_of) -> HTMLResponse:
        row = folder(index).row(method, item)
        if row is None:
            raise HTTPException(404, f"no item {item!r} for method {method!r} in this eval")
        title = f"{folder(index).name}: {method} on {item}"
        return page("view", title, key, records=[item_record(row)], item=row)
