"""The ``concilium`` command group: each command lives in the module of its group and
works through ``concilium.app``. Imports are lazy so ``--help`` answers at once."""

from __future__ import annotations

import click

from ._bench import bench
from ._demo import demo
from ._engine import engine
from ._eval import eval_command
from ._merge import merge_command
from ._replay import replay_command
from ._rescore import rescore_command
from ._research import research_command
from ._run import graph, run, schema, validate
from ._serve import serve
from ._tasks import tasks
from ._ui import ui

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="concilium")
def main() -> None:
    """concilium: parallel reasoning with many agents (debate, self-consistency, ...)."""


for command in (run, validate, schema, graph, eval_command, tasks, serve, ui, research_command,
                rescore_command, replay_command,
                merge_command,
                demo,
                engine, bench):  # fmt: skip
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
