"""A workflow's ``tools: documents:`` stays inside the workflow's folder (links
resolved) unless the user allows another folder in CONCILIUM_DOCUMENT_ROOTS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from concilium import WorkflowError
from concilium.graphs.workflows import load_workflow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "the launch code is 0000"


def workflow_file(folder: Path, documents: str) -> Path:
    text = (ROOT / "examples/react.yaml").read_text()
    assert "documents: docs" in text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "react.yaml"
    path.write_text(text.replace("documents: docs", f"documents: {documents}"))
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("documents", ["../outside", "{outside}", "docs/../../outside", "escape"])
def test_documents_outside_the_workflows_folder_are_refused_with_file_line_and_fix(
    tmp_path: Path, documents: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONCILIUM_DOCUMENT_ROOTS", raising=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (tmp_path / "wf" / "docs").mkdir(parents=True)
    (tmp_path / "wf" / "escape").symlink_to(outside, target_is_directory=True)
    path = workflow_file(tmp_path / "wf", documents.format(outside=outside))
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line_of(path, 'documents:')}: tools.documents ")
    assert f"is {outside}, outside the workflow's folder {tmp_path / 'wf'}" in message
    assert "CONCILIUM_DOCUMENT_ROOTS" in message


def test_documents_inside_the_folder_or_in_an_allowed_root_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONCILIUM_DOCUMENT_ROOTS", raising=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "facts.txt").write_text("The lighthouse was built in 1874.")
    inside = workflow_file(tmp_path / "wf", "docs")
    (tmp_path / "wf" / "docs").mkdir()
    (tmp_path / "wf" / "docs" / "a.txt").write_text("The harbour opened in 1901.")
    assert load_workflow(inside).spec.name == "react"  # the search tool was built
    allowed = workflow_file(tmp_path / "wf2", str(outside))
    monkeypatch.setenv("CONCILIUM_DOCUMENT_ROOTS", f"/nonexistent{os.pathsep}{tmp_path}")
    assert load_workflow(allowed).spec.name == "react"
