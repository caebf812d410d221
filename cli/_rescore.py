"""``concilium rescore``: an eval's summary recomputed from its folder, no model call."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import echo_summary, guard

__all__ = ["rescore_command"]


@click.command("rescore")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--scorer",
    help="exact | numeric | option | regex:PATTERN | contains (default: the eval's, by the answers).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@guard(failed="rescore failed")
def rescore_command(out_dir: str, scorer: str | None, as_json: bool) -> None:
    """Recompute the summary of the eval in OUT_DIR (an eval's --out folder) from its
    results.jsonl alone: every curve, the early-stopping replay and the plot, with no
    model call. summary.json and the plot are written again; results.jsonl is read only.
    """
    from concilium.evals import scorer_from_name, summarise, write_summary

    out = Path(out_dir)
    chosen = scorer_from_name(scorer) if scorer else None
    summary = summarise(out, scorer=chosen)
    path, plots = write_summary(summary, out)
    echo_summary(summary, as_json, [("summary", path), *(("plot", p) for p in plots)])
