"""``concilium run | validate | schema | graph``: one workflow, one question.

WORKFLOW is a YAML file or your own Python graph (``app.py:graph``,
``package.module:graph``); it is built once and bound to ``--backend`` in memory.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    backend_option,
    echo_err,
    guard,
    json_option,
    otlp_option,
    overrides_option,
    state_option,
    tracing,
)

if TYPE_CHECKING:
    from concilium.app import Backend, Override
    from concilium.graphs import Event, RunResult
    from concilium.graphs.workflows import Workflow

__all__ = ["graph", "run", "schema", "validate"]

WORKFLOW = click.argument("workflow", metavar="WORKFLOW")


async def _run(
    workflow: Workflow,
    question: str,
    backend: Backend,
    options: dict[str, Any],
    on_event: Callable[[Event], None] | None,
) -> RunResult:
    from concilium.app import Session

    async with Session(backend, log=echo_err) as session:
        return await session.run(workflow, question, on_event=on_event, **options)


def _budget(workflow: Workflow, limits: tuple[int | None, ...], count_samples: bool) -> Any:
    """The command line's limits, else the workflow's own budget (``--count-samples``
    applies to either)."""
    from dataclasses import replace

    from concilium.agents import Budget

    if any(limits):
        return Budget(*limits, count_samples=count_samples)
    if count_samples and workflow.budget is not None:
        return replace(workflow.budget, count_samples=True)
    return workflow.budget


@click.command()
@WORKFLOW
@click.option("--input", "-i", "question", required=True, help="The question to answer.")
@backend_option
@overrides_option
@json_option
@click.option("--trace", type=click.Path(dir_okay=False), help="Write OpenTelemetry spans here (JSON lines).")  # fmt: skip
@otlp_option
@state_option("SQLite file for checkpoints and the call record.")
@click.option("--run-id", help="Name of the run (the checkpoint thread with --state).")
@click.option("--resume", is_flag=True, help="Continue --run-id from --state; completed calls are not repeated.")  # fmt: skip
@click.option("--force", is_flag=True, help="With --resume: resume even though the workflow or input changed.")  # fmt: skip
@click.option("--max-calls", type=click.IntRange(min=1), help="Budget: at most this many model calls.")  # fmt: skip
@click.option("--max-tokens", type=click.IntRange(min=1), help="Budget: at most this many tokens.")
@click.option("--max-tool-calls", type=click.IntRange(min=1), help="Budget: at most this many tool calls.")  # fmt: skip
@click.option("--count-samples", is_flag=True, help="Budget: --max-calls (or the file's max_calls) counts samples: an n=64 request is 64.")  # fmt: skip
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True, max=10**7), help="Stop the run after this many seconds.")  # fmt: skip
@click.option("--report", type=click.Path(dir_okay=False), help="Write the run as one self-contained HTML file.")  # fmt: skip
@guard()
def run(
    workflow: str,
    question: str,
    backend: Backend,
    overrides: list[Override],
    as_json: bool,
    trace: str | None,
    otlp_endpoint: str | None,
    state: str | None,
    run_id: str | None,
    resume: bool,
    force: bool,
    max_calls: int | None,
    max_tokens: int | None,
    max_tool_calls: int | None,
    count_samples: bool,
    deadline: float | None,
    report: str | None,
) -> None:
    """Run WORKFLOW (a YAML file, or app.py:graph) on a question."""
    from concilium.app import load

    if resume and not (state and run_id):
        raise click.UsageError("--resume needs --state FILE and --run-id ID of the run to continue")
    if force and not resume:
        raise click.UsageError(
            "--force only goes with --resume (resume a run whose workflow or input changed)"
        )
    built = load(workflow, overrides=overrides)
    options = {
        "budget": _budget(built, (max_calls, max_tokens, max_tool_calls), count_samples),
        "state_path": state,
        "run_id": run_id,
        "resume": resume,
        "force_resume": force,
        "deadline_s": deadline,
    }
    from ._progress import Progress

    progress = Progress.for_terminal(sys.stderr)
    on_event = progress.on_event if progress else None
    if report:
        from concilium.ui import EventLog

        log = EventLog(on_event)
        on_event = log
    with tracing(otlp_endpoint, trace):
        try:
            result = asyncio.run(_run(built, question, backend, options, on_event))
        except Exception as exc:
            if progress:
                progress.close()  # clear the progress line before the report
            _report_partial(exc, as_json)
            raise  # guard prints the error and exits 1 (2 for a user error)
        finally:
            if progress:
                progress.close()
    if report:
        page = log.report(result, built.name, question, file=built.file)
        Path(report).write_text(page, "utf-8")
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    from ._progress import render_result

    if backend.notice:
        click.echo(backend.notice)
    click.echo(render_result(result))
    if trace:
        click.echo(f"trace: {trace}")


def _report_partial(exc: Exception, as_json: bool) -> None:
    """What a failed run did before it stopped: with --json the partial result (with
    "partial": true and the error) on stdout, else the usage so far on stderr."""
    from concilium.graphs import partial_result

    done = partial_result(exc)
    if done is None:
        return
    if as_json:
        click.echo(json.dumps(done.to_json(), ensure_ascii=False))
    else:
        usage = done.usage
        click.echo(
            f"usage so far: {done.calls} calls, {usage.prompt_tokens} prompt + "
            f"{usage.completion_tokens} completion tokens, {len(done.transcript)} turns",
            err=True,
        )


@click.command()
@WORKFLOW
@overrides_option
@guard()
def validate(workflow: str, overrides: list[Override]) -> None:
    """Check WORKFLOW (a YAML file, or app.py:graph) without running it."""
    from concilium.app import load

    wf = load(workflow, overrides=overrides)  # simulate: is part of the schema, checked here
    wf.graph.check()
    click.echo(f"ok: {workflow}: workflow {wf.name!r} ({wf.kind}), agents {sorted(wf.agents)}")


@click.command()
@guard()
def schema() -> None:
    """Print the JSON Schema of workflow files."""
    from concilium.graphs.workflows import WorkflowSpec

    click.echo(json.dumps(WorkflowSpec.model_json_schema(), indent=2))


@click.command()
@WORKFLOW
@overrides_option
@guard()
def graph(workflow: str, overrides: list[Override]) -> None:
    """Print WORKFLOW's graph as a Mermaid flowchart."""
    from concilium.app import load

    click.echo(load(workflow, overrides=overrides).graph.to_mermaid())
