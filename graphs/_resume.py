"""Resume that checks what it resumes: a fingerprint per run and a lock per run id.

A run with a state file is claimed before it starts. The claim takes a lock on the
run id and reads (or writes) the run's row in the ``concilium_runs`` table of the call
record file (``calls_path``): the fingerprint of the workflow and of the input.

* Starting a run id the state file already holds is refused (resume it, or pick a
  new id); resuming one whose workflow or input changed is refused too, unless the
  caller says so (``force_resume=True``, ``--resume --force``), which then records
  the new fingerprints.
* The lock is ``flock`` on a sibling file, ``run.db.<run id>.lock``, which holds the
  owner's pid. The kernel drops it when its process ends however it ends (``kill
  -9`` included), so a stale lock never blocks a resume; a second process, or a
  second ``run`` in the same process, on the same run id fails at once. The file is
  removed when the run ends. Where ``fcntl`` is missing (Windows) there is no lock.
* A state file that SQLite or JSON cannot read is a ``UserError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from concilium._errors import UserError

from ._graph import Graph

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None

_RUNS = (
    "CREATE TABLE IF NOT EXISTS concilium_runs (run_id TEXT PRIMARY KEY, workflow TEXT, "
    "workflow_fingerprint TEXT, input_fingerprint TEXT)"
)


def fingerprint_of(value: Any) -> str:
    """A stable hash of a JSON-able value (canonical JSON, sorted keys).

    Example:
        >>> fingerprint_of({"b": 1, "a": [2]}) == fingerprint_of({"a": [2], "b": 1})
        True
    """
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def graph_fingerprint(graph: Graph, override: str | None = None) -> str:
    """The fingerprint of a graph: ``override`` when given (a workflow file's spec
    hash, or a version string of the caller's), else its structure: name, nodes,
    edges, routes, and the plain settings its node and route functions close over
    (numbers, strings, names of agents: a debate's rounds and debaters). Other
    settings are not seen; pass ``fingerprint=`` to ``run`` to cover them.

    Example:
        >>> from concilium.agents import Agent, FakeModel
        >>> from concilium.graphs.patterns import debate
        >>> pair = [Agent(name, FakeModel().spec()) for name in ("ann", "bob")]
        >>> graph_fingerprint(debate(pair, rounds=2)) == graph_fingerprint(debate(pair, rounds=3))
        False
    """
    if override is not None:
        return fingerprint_of(["given", override])
    return fingerprint_of(_structure(graph, 0))


def _structure(graph: Graph, depth: int) -> dict[str, Any]:
    return {
        "name": graph.name,
        "nodes": {n.name: _settings(n.fn, depth) for n in graph.nodes.values()},
        "edges": sorted(graph.edges),
        "routes": sorted(
            [r.source, sorted(r.targets), _settings(r.fn, depth)] for r in graph.routes
        ),
    }


_PLAIN = (int, float, str, bool, type(None))


def _settings(value: Any, depth: int) -> Any:
    """The plain values a function closes over (and the functions it closes over),
    a graph's structure, an agent's name; ``None`` for anything else."""
    if isinstance(value, _PLAIN):
        return value
    if depth > 4:
        return None
    if isinstance(value, Graph):
        return _structure(value, depth + 1)
    if isinstance(value, (tuple, list)):
        items = cast("tuple[Any, ...] | list[Any]", value)
        return [_settings(v, depth + 1) for v in items[:64]]
    cells = getattr(value, "__closure__", None)
    if callable(value) and cells is not None:
        code = getattr(value, "__code__", None)
        names: tuple[str, ...] = code.co_freevars if code is not None else ()
        found: dict[str, Any] = {}
        for name, cell in zip(names, cast("tuple[Any, ...]", cells), strict=True):
            try:
                found[name] = _settings(cell.cell_contents, depth + 1)
            except ValueError:  # a cell not filled yet
                continue
        return found
    graph = getattr(value, "graph", None)
    if isinstance(graph, Graph):  # a graph used as an agent
        return _structure(graph, depth + 1)
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def corrupt_state(path: str | Path, exc: BaseException) -> UserError:
    """The error for a state file SQLite or JSON cannot read."""
    return UserError(
        f"the state file {str(path)!r} is damaged or not a concilium state file "
        f"({type(exc).__name__}: {exc}); move it away, or start with a new --state FILE "
        "(state_path=)"
    )


def is_corruption(exc: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged (not merely busy or locked)."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(w in text for w in ("malformed", "not a database", "no such table", "corrupt"))
    return isinstance(exc, sqlite3.DatabaseError)


@dataclass
class RunClaim:
    """A run id held by this run: its lock file (``None`` without ``fcntl``)."""

    run_id: str
    lock_path: Path
    _handle: IO[str] | None

    def release(self) -> None:
        """Remove the lock file and drop the lock (removed first, while held, so a
        process that opens the path next gets a new file and a lock of its own)."""
        if self._handle is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            self._handle.close()  # closing drops the flock
            self._handle = None


def lock_path(state_path: str | Path, run_id: str) -> Path:
    """The lock file of a run id: ``run.db.<run id>.lock`` beside the state file (a
    hash stands in for a run id that is not a plain file name)."""
    path = Path(state_path)
    safe = run_id if re.fullmatch(r"[\w.-]{1,64}", run_id) else fingerprint_of(run_id)[:16]
    return path.with_name(f"{path.name}.{safe}.lock")


def _lock(state_path: str | Path, run_id: str) -> RunClaim:
    path = lock_path(state_path, run_id)
    if fcntl is None:  # pragma: no cover
        return RunClaim(run_id, path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = handle.read().strip() or "?"
            handle.close()
            raise UserError(
                f"run {run_id!r} is in progress in process {owner} (lock {str(path)!r}); "
                "wait for it to end, or use another --run-id (run_id=)"
            ) from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # its holder removed the file as we locked it: lock the new one
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return RunClaim(run_id, path, handle)


def claim_run(
    state_path: str | Path,
    calls_file: str | Path,
    run_id: str,
    *,
    workflow: str,
    workflow_fingerprint: str,
    input_fingerprint: str,
    resume: bool,
    force: bool = False,
    db: sqlite3.Connection | None = None,
) -> RunClaim:
    """Lock ``run_id`` and check it against its row in ``calls_file`` (see the module
    docstring); the caller releases the claim when the run ends. ``db``: a connection
    to ``calls_file`` already open (a ``StateStore``'s), used instead of a new one."""
    claim = _lock(state_path, run_id)
    try:
        _check(
            Path(calls_file),
            run_id,
            workflow,
            workflow_fingerprint,
            input_fingerprint,
            resume,
            force,
            db,
        )
    except BaseException:
        claim.release()
        raise
    return claim


def _check(
    calls_file: Path,
    run_id: str,
    workflow: str,
    workflow_fp: str,
    input_fp: str,
    resume: bool,
    force: bool,
    shared: sqlite3.Connection | None,
) -> None:
    from concilium.agents import private_file

    db = shared
    if db is None:
        try:
            db = sqlite3.connect(private_file(calls_file), isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise corrupt_state(calls_file, exc) from None
    try:
        db.execute(_RUNS)
        row = db.execute(
            "SELECT workflow, workflow_fingerprint, input_fingerprint FROM concilium_runs "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is not None:
            _compare(run_id, row, workflow, workflow_fp, input_fp, resume, force)
        db.execute(
            "INSERT OR REPLACE INTO concilium_runs VALUES (?, ?, ?, ?)",
            (run_id, workflow, workflow_fp, input_fp),
        )
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        raise corrupt_state(calls_file, exc) from None
    finally:
        if shared is None:
            db.close()


def _compare(
    run_id: str,
    row: tuple[str, str, str],
    workflow: str,
    workflow_fp: str,
    input_fp: str,
    resume: bool,
    force: bool,
) -> None:
    if not resume:
        raise UserError(
            f"run {run_id!r} already exists in this state file; continue it with --resume "
            "(resume=True), or start a new run with another --run-id (run_id=)"
        )
    changed = [
        what
        for what, before, now in (
            (
                "the workflow"
                + (f" (was {row[0]!r}, now {workflow!r})" if row[0] != workflow else ""),
                row[1],
                workflow_fp,
            ),
            ("the input", row[2], input_fp),
        )
        if before != now
    ]
    if changed and not force:
        raise UserError(
            f"cannot resume run {run_id!r}: {' and '.join(changed)} changed since it "
            "started, and its recorded steps would not fit; start a new run with another "
            "--run-id (run_id=), or resume anyway with --resume --force (force_resume=True)"
        )
