"""``concilium research FOLDER "question"``: the research assistant on a folder.

It runs ``examples/research_assistant.yaml`` (or ``--workflow FILE``) with the
folder given on the command line as its ``tools: documents:``; the folder is named
by the person running the command, so it need not sit next to the workflow file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from concilium.examples import FOLDER

from ._common import backend_option, echo_err, guard, otlp_option, tracing

if TYPE_CHECKING:
    from concilium.app import Backend
    from concilium.graphs import RunResult
    from concilium.graphs.workflows import Workflow

__all__ = ["research_command"]

EXAMPLE = FOLDER / "research_assistant.yaml"


def load_research_workflow(path: str | Path, folder: str | Path) -> Workflow:
    """The workflow file at ``path``, built once with ``tools.documents`` set to
    ``folder`` (named by the person running the command, so it may lie anywhere)."""
    from concilium.app import load

    real = Path(folder).resolve()
    return load(path, overrides={"tools.documents": str(real)}, base_dir=real.parent)


async def _research(workflow: str, folder: str, question: str, backend: Backend) -> RunResult:
    from concilium.app import Session

    loaded = load_research_workflow(workflow, folder)
    async with Session(backend, log=echo_err) as session:
        return await session.run(loaded, question)


@click.command("research")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("question")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the Markdown report here.")
@click.option("--json", "as_json", is_flag=True, help="Print claims, citations, verdicts, calls and tokens as JSON.")  # fmt: skip
@backend_option
@click.option("--workflow", type=click.Path(exists=True, dir_okay=False), default=str(EXAMPLE), show_default=True, help="A workflow file of kind research.")  # fmt: skip
@otlp_option
@guard()
def research_command(
    folder: str,
    question: str,
    out: str | None,
    as_json: bool,
    backend: Backend,
    workflow: str,
    otlp_endpoint: str | None,
) -> None:
    """Research FOLDER's documents on QUESTION and print a cited, checked report."""
    with tracing(otlp_endpoint):
        result = asyncio.run(_research(workflow, folder, question, backend))
    report = result.answer or ""
    if out:
        Path(out).write_text(report + "\n", "utf-8")
    if as_json:
        details = result.details or {}
        payload = {
            "question": question,
            "report": report,
            "partial": bool(details.get("partial")) or result.partial,
            "questions": details.get("questions", []),
            "claims": [
                {**c, "question": f["question"]}
                for f in details.get("findings", [])
                for c in f["claims"]
            ],
            "findings": details.get("findings", []),
            "votes": details.get("votes", []),
            "citations": details.get("citations", []),
            "fabricated": details.get("fabricated", []),
            "verdicts": details.get("verdicts", []),
            "supported_rate": details.get("supported_rate"),
            "calls": result.calls,
            "tokens": {
                "prompt": result.usage.prompt_tokens,
                "completion": result.usage.completion_tokens,
            },
            "elapsed_s": round(result.elapsed_s, 3),
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    if backend.notice:
        click.echo(backend.notice)
    click.echo(report)
