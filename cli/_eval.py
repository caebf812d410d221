"""``concilium eval``: compare workflows on a data file (accuracy, cost, the plot)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import backend_option, echo_summary, guard, otlp_option, tracing
from ._merge import Shard, shard_option, start_shard

if TYPE_CHECKING:
    from concilium.app import Backend

__all__ = ["eval_command"]


@click.command("eval")
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("workflows", nargs=-1, required=True, metavar="WORKFLOW...")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Sweep a workflow field, e.g. workflow.samples=1,4,16 (repeatable: a grid).",
)
@backend_option
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Results folder."
)
@click.option(
    "--scorer",
    help="exact | numeric | option | regex:PATTERN | contains (default: by the answers).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=10_000),
    default=16,
    show_default=True,
    help="(item, method) runs in flight at once.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS|auto",
    help="Shard items over a Ray cluster (pip install 'concilium[ray]'); needs a --backend URL.",
)
@shard_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--report", type=click.Path(dir_okay=False), help="Also write the results as one HTML file."
)
@otlp_option
@guard(failed="eval failed", interrupted="interrupted (rerun with the same --out to resume)")
def eval_command(
    data: str,
    workflows: tuple[str, ...],
    settings: tuple[str, ...],
    backend: Backend,
    out_dir: str,
    scorer: str | None,
    limit: int | None,
    concurrency: int,
    ray_address: str | None,
    shard: Shard | None,
    as_json: bool,
    report: str | None = None,
    otlp_endpoint: str | None = None,
) -> None:
    """Run each WORKFLOW on every item of DATA (.jsonl or .parquet) and compare them.

    Rerun with the same --out to resume: finished items and calls are not repeated.
    """
    with tracing(otlp_endpoint):
        _eval(data, workflows, settings, backend, out_dir, scorer, limit, concurrency, as_json,
              ray_address, shard, otlp_endpoint)  # fmt: skip
    if report:  # the same view as concilium ui --evals, self-contained
        from concilium.ui import render_eval_report

        Path(report).write_text(render_eval_report(out_dir), encoding="utf-8")


def _eval(
    data: str,
    workflows: tuple[str, ...],
    settings: tuple[str, ...],
    backend: Backend,
    out_dir: str,
    scorer_name: str | None,
    limit: int | None,
    concurrency: int,
    as_json: bool,
    ray_address: str | None = None,
    shard: Shard | None = None,
    otlp_endpoint: str | None = None,
) -> None:
    from concilium.agents import eval_span
    from concilium.evals import (
        build_methods,
        default_scorer,
        evaluate,
        load_records,
        parse_setting,
        scorer_from_name,
        summarise,
        write_summary,
    )

    records = load_records(data)[:limit] if limit else load_records(data)
    scorer = (
        scorer_from_name(scorer_name)
        if scorer_name
        else default_scorer([r.answer for r in records], any(r.choices for r in records))
    )
    sweeps = [parse_setting(s) for s in settings]
    methods = build_methods(workflows, sweeps)
    out = Path(out_dir)
    if shard is not None:  # after the scorer: a shard scores as the whole data would
        names = [m.name for m in methods]
        records = start_shard(out, shard, records, names, scorer_name)
    names = [m.name for m in methods]
    servers: dict[str, object] = {}  # where the calls went: the servers' /metrics, before/after
    with eval_span(Path(data).name, names, len(records)):
        if ray_address:  # the workers export to the same collector, linked to this span
            from concilium.evals import evaluate_on_ray

            results = evaluate_on_ray(records, workflows, sweeps, backend, out, address=ray_address,
                                      scorer=scorer, concurrency=concurrency,
                                      otlp_endpoint=otlp_endpoint, servers=servers)  # fmt: skip
        else:
            run = evaluate(records, methods, backend, out, scorer=scorer, concurrency=concurrency,
                           servers=servers)  # fmt: skip
            results = asyncio.run(run)
    by_id = {r.id: r for r in records}

    def predicate(row: dict[str, object]) -> object:
        record = by_id[str(row["id"])]
        return lambda answer: scorer(answer, record.answer, record.choices)

    summary = summarise(results, [m.name for m in methods], predicate, scorer=scorer)
    path, plots = write_summary(summary, out, servers)
    files = [("results", out / "results.jsonl"), ("summary", path), *(("plot", p) for p in plots)]
    echo_summary(summary, as_json, files, backend.notice, servers)
