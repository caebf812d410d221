# pyright: strict
"""``concilium tasks``: list the shipped tasks and write one as JSONL.

The generators live in ``concilium.evals`` (imported when a command runs, so
``concilium --help`` stays fast). ``concilium tasks make`` is how the files in
``examples/data/`` were made, and a test checks they still match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["tasks", "tasks_jsonl"]


def tasks_jsonl(items: list[dict[str, Any]]) -> str:
    """Items as JSON Lines: one compact object per line, keys in item order, UTF-8 kept.

    Example:
        >>> print(tasks_jsonl([{"id": "sums-0000", "answer": "8"}]), end="")
        {"id": "sums-0000", "answer": "8"}
    """
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


@click.group("tasks")
def tasks() -> None:
    """Small generated tasks with known answers, for `concilium eval`."""


@tasks.command("list")
def list_tasks() -> None:
    """Name and description of every shipped task."""
    from concilium.evals.tasks import describe_task, task_names

    names = task_names()
    width = max(map(len, names))
    for name in names:
        click.echo(f"{name:<{width}}  {describe_task(name)}")


@tasks.command("make")
@click.argument("name")
@click.option(
    "--n", "n", default=50, show_default=True, type=click.IntRange(min=1), help="Items to make."
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed: the same seed, the same items."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSONL here (folders are created) instead of to stdout.",
)
def make(name: str, n: int, seed: int, out: Path | None) -> None:
    """Write N items of task NAME as JSON Lines ({id, question, answer, metadata})."""
    from concilium.evals.tasks import make_task

    try:
        items = make_task(name, n, seed)
    except ValueError as exc:  # unknown task or too many items: the message says the fix
        raise click.BadParameter(str(exc), param_hint="NAME or --n") from None
    text = tasks_jsonl(items)
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {len(items)} {name} items to {out}", err=True)
