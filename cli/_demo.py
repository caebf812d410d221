"""``concilium demo``: parallel sampling on the embedded engine, accuracy and time."""

from __future__ import annotations

import click

from ._common import echo_err, guard, json_file_option, repeats_option

__all__ = ["demo"]


@click.command()
@click.option("--task", default="capitals", show_default=True, type=click.Choice(["antonyms", "capitals", "sequences", "sums", "arithmetic"]), help="A shipped task (examples/data).")  # fmt: skip
@click.option("--items", default=50, show_default=True, type=click.IntRange(1, 50), help="Items of the task.")  # fmt: skip
@click.option("--backend", "-b", default="local", show_default=True, help="local (the embedded engine), sim (a test double), or a URL.")  # fmt: skip
@click.option("--out", default=".demo", show_default=True, type=click.Path(file_okay=False), help="The eval's results folder (rerun: finished items are not repeated).")  # fmt: skip
@repeats_option
@json_file_option
@guard()
def demo(task: str, items: int, backend: str, out: str, repeats: int, json_file: str | None) -> None:  # fmt: skip
    """One sample vs greedy vs the majority of 9 on a shipped task, then the time of one
    request, n=9 in one request, 9 at once and 9 in sequence, in one engine session."""
    from concilium.app import Backend
    from concilium.bench import demo as run_demo

    chosen = Backend.parse(backend)
    if chosen.notice:
        click.echo(chosen.notice)
    run_demo.main(backend=backend, task=task, items=items, out=out, repeats=repeats,
                  json_file=json_file, say=echo_err)  # fmt: skip
