"""``concilium eval --ray``: the same eval sharded over a Ray cluster.

The orchestration is async I/O, so one process drives a whole model server; when an
eval outgrows one machine, its unfinished items are dealt round-robin into shards and
each shard is one Ray task running the ordinary async runner (``evaluate``) against the
same model pool (the same backend URL, or each model's own ``api_base``). Each task
works in a scratch folder of its own and returns its rows; the driver appends them to
``DIR/results.jsonl`` as shards finish and returns every (item, method) row in the
order ``evaluate`` does, so the summary is computed exactly as for a local run. A
rerun with the same folder skips the finished rows (a shard cut off mid-way runs again
in full: its calls were recorded on the worker, not in ``DIR``).

Ray is imported only here, when the option is used; install it with
``pip install 'concilium[ray]'``.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from concilium._errors import UserError

from ._data import EvalRecord
from ._runner import DEFAULT_CONCURRENCY, RESULTS_FILE, ItemResult, evaluate
from ._scorers import Scorer, default_scorer
from ._sweep import Setting, build_methods

if TYPE_CHECKING:
    from concilium.app import Backend

__all__ = ["evaluate_on_ray"]

_INSTALL_HINT = "concilium eval --ray needs Ray: pip install 'concilium[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(_INSTALL_HINT) from None
    return ray


def _key(method: str, item: str) -> tuple[str, str]:
    return (method, item)


def _shard(
    records: list[EvalRecord],
    workflows: list[str],
    settings: list[Setting],
    backend: Backend,
    scorer: Scorer,
    concurrency: int,
) -> list[ItemResult]:
    """One Ray task: the async runner on one shard, in a scratch folder of its own."""
    methods = build_methods(workflows, settings)
    with tempfile.TemporaryDirectory(prefix="concilium-ray-") as scratch:
        return asyncio.run(
            evaluate(
                records,
                methods,
                backend,
                scratch,
                scorer=scorer,
                concurrency=concurrency,
                progress=False,
            )
        )


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
) -> list[ItemResult]:
    """Run ``evaluate`` sharded over Ray; return the rows a local run would.

    Args:
        records: the items.
        workflows: the workflow files (read by every task: a path the workers see).
        settings: the ``--set`` sweeps (see ``parse_setting``).
        backend: a server every worker reaches (a URL, or the workflows' own
            ``api_base``); ``sim`` and ``local`` start a server per process, so they
            are refused.
        out_dir: the run folder; ``results.jsonl`` there is read (resume) and appended.
        address: the Ray cluster (``auto``, ``HOST:PORT``, ``ray://...``); ignored when
            this process is already connected (``ray.init`` was called).
        scorer: decides correctness; default by the gold answers.
        concurrency: (item, method) runs in flight over all shards together.
        shards: Ray tasks; default the cluster's CPUs, at most one per item.

    Example:
        >>> # evaluate_on_ray(records, ["sc.yaml"], [], Backend.parse(url), "out", address="auto")
    """
    if backend.kind in ("sim", "local"):
        raise UserError(
            f"--ray with --backend {backend.kind}: every Ray task would start its own server; "
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
    todo = [r for r in records if any(_key(n, r.id) not in finished for n in names)]
    started_here = False
    if todo and not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        if todo:
            count = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
            count = max(1, min(count, len(todo)))
            per_task = max(1, math.ceil(concurrency / count))
            task = ray.remote(_shard)
            # a file as a path every worker reads; app.py:graph targets as given
            files = [str(Path(w).resolve()) if Path(w).exists() else str(w) for w in workflows]
            pending = [
                task.remote(todo[i::count], files, list(settings), backend, scorer, per_task)
                for i in range(count)
            ]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for row in cast(list[ItemResult], ray.get(ready[0])):
                    key = _key(row["method"], row["id"])
                    if key in finished:
                        continue  # finished by an earlier run: keep its line
                    with (out / RESULTS_FILE).open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                    finished[key] = row
    finally:
        if started_here:
            ray.shutdown()
    return [finished[_key(n, r.id)] for n in names for r in records]


def _finished(
    path: Path, names: Sequence[str], records: Sequence[EvalRecord]
) -> dict[tuple[str, str], ItemResult]:
    wanted = {_key(n, r.id) for n in names for r in records}
    found: dict[tuple[str, str], ItemResult] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that item runs again
        key = _key(str(row.get("method")), str(row.get("id")))
        if key in wanted:
            found[key] = cast(ItemResult, row)
    return found
