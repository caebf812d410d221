"""``concilium research FOLDER "question"``: the research assistant on a folder.

It runs ``examples/research_assistant.yaml`` (or ``--workflow FILE``) with the
folder given on the command line as its ``tools: documents:``; the folder is named
by the person running the command, so it need not sit next to the workflow file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

__all__ = ["research_command"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "research_assistant.yaml"


def load_research_workflow(path: str | Path, folder: str | Path, api_base: Any = None) -> Any:
    """The workflow file at ``path`` with ``tools.documents`` set to ``folder``."""
    from concilium.graphs.workflows import ToolsSpec, build_workflow, parse_workflow

    text = Path(path).read_text("utf-8")
    spec, data, lines = parse_workflow(text, str(path))
    real = Path(folder).resolve()
    tools = (spec.tools or ToolsSpec()).model_copy(update={"documents": str(real)})
    spec = spec.model_copy(update={"tools": tools})
    return build_workflow(
        spec, file=str(path), lines=lines, data=data, api_base=api_base, base_dir=real.parent
    )


async def _research(workflow: str, folder: str, question: str, backend: Any) -> Any:
    from concilium.agents import aclose
    from concilium.graphs import run

    from ._errors import echo_err

    loaded = load_research_workflow(workflow, folder)

    def reload(path: str, api_base: Any) -> Any:
        return load_research_workflow(path, folder, api_base)

    async with backend.bind([loaded], reload=reload, log=echo_err) as (wf,):
        try:
            return await run(wf.graph, question, budget=wf.budget)
        finally:
            await aclose()


@click.command("research")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("question")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the Markdown report here.")
@click.option("--json", "as_json", is_flag=True, help="Print claims, citations, verdicts, calls and tokens as JSON.")  # fmt: skip
@click.option("--backend", "-b", help="sim (simulated server), local (embedded engine), or a URL.")
@click.option("--workflow", type=click.Path(exists=True, dir_okay=False), default=str(EXAMPLE), show_default=True, help="A workflow file of kind research.")  # fmt: skip
def research_command(
    folder: str, question: str, out: str | None, as_json: bool, backend: str | None, workflow: str
) -> None:
    """Research FOLDER's documents on QUESTION and print a cited, checked report."""
    from concilium._errors import ConciliumError, UserError, escape_controls
    from concilium.serving import Backend

    try:
        chosen = Backend.parse(backend)
        result = asyncio.run(_research(workflow, folder, question, chosen))
    except UserError as exc:
        raise click.UsageError(escape_controls(str(exc))) from None
    except ConciliumError as exc:
        raise click.ClickException(escape_controls(str(exc))) from None
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
    if chosen.notice:
        click.echo(chosen.notice)
    click.echo(report)
