"""The passages a research report cites, for the Research report view.

A research run's result (``kind: research``) keeps its report, its numbered
citations (passage IDs) and the verifier's verdicts, not the passages' text; the
view shows the cited passage when a reader clicks ``[n]``, so the UI reads each
cited passage (with its neighbours in the document) from the workflow's evidence
store and keeps them in the run's record. A report file then opens them offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict


class Source(TypedDict):
    """One cited passage as the view shows it."""

    number: int
    passage_id: str
    document: str
    location: str
    where: str  # the location in words: "lines 3-4", "page 2"
    text: str  # the passage itself, "" when the store no longer has it
    before: str  # the passage before it in the same document
    after: str  # and the one after


def is_research(result: Mapping[str, Any] | None) -> bool:
    """Whether ``result`` (``RunResult.to_json()``) is a research run's: its details
    hold the report's citations."""
    details = (result or {}).get("details")
    return isinstance(details, Mapping) and isinstance(details.get("citations"), list)


def documents_folder(workflow_file: str | Path) -> Path | None:
    """The ``tools: documents:`` folder of a workflow file, or None."""
    from concilium.graphs.workflows import parse_workflow

    path = Path(workflow_file)
    spec, _, _ = parse_workflow(path.read_text("utf-8"), str(path))
    documents = spec.tools.documents if spec.tools else None
    return path.parent / documents if documents else None


def research_sources(
    result: Mapping[str, Any] | None, workflow_file: str | Path | None
) -> list[Source] | None:
    """The cited passages of a research run, numbered as in its report; None when
    ``result`` is not a research run's.

    Example:
        >>> research_sources({"answer": "84", "details": {}}, None) is None
        True
        >>> research_sources({"details": {"citations": []}}, None)
        []
    """
    if not is_research(result):
        return None
    assert result is not None
    cited: list[dict[str, Any]] = result["details"]["citations"]
    store = _open_store(workflow_file) if cited and workflow_file else None
    try:
        return [_source(c, store) for c in cited]
    finally:
        if store is not None:
            store.close()


def _open_store(workflow_file: str | Path) -> Any:
    from concilium.tools.evidence import EvidenceStore

    try:
        folder = documents_folder(workflow_file)
    except Exception:  # the file changed since the run: show the report without passages
        return None
    if folder is None or not folder.is_dir():
        return None
    return EvidenceStore(folder)


def _source(cited: Mapping[str, Any], store: Any) -> Source:
    from concilium.graphs.patterns import describe_location

    pid = str(cited["passage_id"])
    text = before = after = ""
    if store is not None:
        around = _read(store, pid)
        ids = [p.id for p in around]
        if pid in ids:
            i = ids.index(pid)
            text = around[i].text
            before = around[i - 1].text if i > 0 else ""
            after = around[i + 1].text if i + 1 < len(around) else ""
    return Source(
        number=int(cited["number"]),
        passage_id=pid,
        document=str(cited["document"]),
        location=str(cited["location"]),
        where=describe_location(str(cited["location"])),
        text=text,
        before=before,
        after=after,
    )


def _read(store: Any, passage_id: str) -> list[Any]:
    from concilium.tools import ToolError

    for attempt in range(2):
        try:
            return store.read(passage_id, neighbours=1)
        except ToolError:
            if attempt == 0:
                store.refresh()  # the index was built elsewhere, or is older than the folder
    return []
