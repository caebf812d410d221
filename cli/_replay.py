"""``concilium replay-deepconf``: DeepConf online's rule replayed on an eval's stored
samples, no model call (pick keep and consensus before spending tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import guard

__all__ = ["replay_command"]


def _words(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _numbers(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        return [float(v) for v in _words(ctx, param, value)]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of numbers, e.g. 0.9,0.95"
        ) from None


@click.command("replay-deepconf")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--keep", default="top10,top90", show_default=True, callback=_words,
    help="deepconf_online's keep (eta), comma-separated: top10 (threshold at the 90th "
    "percentile of the warm-up, DeepConf-low) and/or top90 (the 10th, DeepConf-high).",
)  # fmt: skip
@click.option(
    "--consensus", default="0.95", show_default=True, callback=_numbers,
    help="tau, comma-separated: the weighted share of the leading answer that stops sampling.",
)  # fmt: skip
@click.option("--warmup", type=click.IntRange(min=1), default=16, show_default=True,
              help="Samples drawn whole to set the threshold.")  # fmt: skip
@click.option("--budget", type=click.IntRange(min=1),
              help="Most samples an item may draw (default: all it has stored).")  # fmt: skip
@click.option("--window", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Tokens in a confidence group.")  # fmt: skip
@click.option(
    "--method", help="Only this method of the eval (default: every one with token confidences)."
)
@click.option(
    "--scorer", help="exact | numeric | option | regex:PATTERN | contains (default: the eval's)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the replay as JSON on stdout.")
@guard(failed="replay failed")
def replay_command(
    out_dir: str, keep: list[str], consensus: list[float], warmup: int, budget: int | None,
    window: int, method: str | None, scorer: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Replay DeepConf online on the eval in OUT_DIR (an eval's --out folder): for each
    keep x consensus, had each item's stored samples been drawn one at a time by
    deepconf_online's rule, its accuracy and the tokens it would have generated and
    saved. The samples must carry token confidences (sampled with top-k logprobs).
    """
    from concilium.evals import render_replay, replay_deepconf, scorer_from_name

    report = replay_deepconf(
        Path(out_dir), keep, consensus, warmup=warmup, budget=budget, window=window,
        method=method, scorer=scorer_from_name(scorer) if scorer else None,
    )  # fmt: skip
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render_replay(report))
