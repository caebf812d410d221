"""Mutated example workflows: each either fails ``concilium validate`` with the file
and the line of the mutated value, or runs on the simulated server.

A drill of 283 mutated files found 4 that passed ``validate`` and then raised at
``run``: a lone surrogate in ``name`` (UTF-8 cannot encode it), a ``simulate:`` regex
that does not compile, and ``simulate:`` templates ``str.format`` cannot fill. Here
each mutation is applied to a few examples; the refused ones must point at the line
of the value, the accepted ones must run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from concilium.app import Session, load
from concilium.cli import main
from concilium.examples import FOLDER

EXAMPLES = ["debate.yaml", "react.yaml", "manager_worker.yaml", "self_consistency.yaml"]
Data = dict[str, Any]


def _simulate(data: Data) -> Data:
    return data.setdefault("simulate", {})


def _statistical(data: Data) -> Data:
    return _simulate(data).setdefault("statistical", {})


def _first_agent(data: Data) -> Data:
    return next(iter(data["agents"].values()))


def _rename_agents(data: Data, new: Callable[[str], str]) -> None:
    """Rename every agent, and every mention of it under ``workflow:``."""
    names = {old: new(old) for old in data["agents"]}
    data["agents"] = {names[k]: v for k, v in data["agents"].items()}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return names.get(value, value) if isinstance(value, str) else value

    data["workflow"] = walk(data["workflow"])


# name -> (mutation, the key whose line the error names; None: the mutation must run)
REFUSED: dict[str, tuple[Callable[[Data], None], str]] = {
    "lone surrogate in name": (lambda d: d.update(name="deb\ud800ate"), "name:"),
    "surrogate pair as two escapes": (
        lambda d: d.update(description="\ud83d\ude00"),
        "description:",
    ),
    "lone surrogate in a system prompt": (
        lambda d: _first_agent(d).update(system="Solve \udcff it."),
        "system:",
    ),
    "unclosed group in a rule's match": (
        lambda d: _simulate(d).update(rules=[{"match": "(What", "replies": ["x"]}]),
        "match:",
    ),
    "bad regex as an answers key": (
        lambda d: _statistical(d).update(answers={"*7": "84"}),
        "answers:",
    ),
    "unbalanced brace in the template": (
        lambda d: _statistical(d).update(template="the answer is {answer"),
        "template:",
    ),
    "unknown field in the template": (
        lambda d: _statistical(d).update(template="{answer} or {other}"),
        "template:",
    ),
    "attribute access in the template": (
        lambda d: _statistical(d).update(template="{answer.__class__}"),
        "template:",
    ),
    "huge width in the template": (
        lambda d: _statistical(d).update(template="{answer:>999999999}"),
        "template:",
    ),
    "TOOL_CALLS that is not JSON": (
        lambda d: _simulate(d).update(rules=[{"replies": ['TOOL_CALLS: [{"name": "x"']}]),
        "replies:",
    ),
    "TOOL_CALLS without a name": (
        lambda d: _simulate(d).update(rules=[{"replies": ['TOOL_CALLS: [{"arguments": {}}]']}]),
        "replies:",
    ),
    "TOOL_CALLS nested 100,000 deep": (
        lambda d: _simulate(d).update(
            rules=[{"replies": ["TOOL_CALLS: " + "[" * 100_000 + "]" * 100_000]}]
        ),
        "replies:",
    ),
    "line break in an agent's name": (lambda d: _rename_agents(d, lambda n: f"{n}\nX"), ""),
}

ACCEPTED: dict[str, Callable[[Data], None]] = {
    "a long name with a line break": lambda d: d.update(name="a\nb " * 500),
    "a character past U+FFFF in name": lambda d: d.update(name="debate \U0001f600"),
    "agents named in other scripts": lambda d: _rename_agents(d, lambda n: f"{n} ü 名"),
    "a valid regex and template": lambda d: _simulate(d).update(
        rules=[{"match": r"\d+ \* \d+", "replies": ["It is \\boxed{84}."]}],
        statistical={"template": "{{literal}} \\boxed{{{answer}}}"},
    ),
}


def _write(tmp_path: Path, example: str, label: str, mutate: Callable[[Data], None]) -> Path:
    data = yaml.safe_load((FOLDER / example).read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / f"{Path(example).stem}-{label.replace(' ', '_')}.yaml"
    # ascii: non-ASCII text becomes \u escapes, as a hand-written hostile file has them
    path.write_text(yaml.safe_dump(copy.deepcopy(data), allow_unicode=False, width=10**9))
    for folder in ("docs", "research_corpus", "data"):  # what examples name beside them
        if (FOLDER / folder).is_dir() and not (tmp_path / folder).exists():
            (tmp_path / folder).symlink_to(FOLDER / folder)
    return path


def _line_of(path: Path, key: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().lstrip("- ").startswith(key))


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("label", sorted(REFUSED))
def test_validate_refuses_it_with_the_file_and_line(
    tmp_path: Path, example: str, label: str
) -> None:
    mutate, key = REFUSED[label]
    path = _write(tmp_path, example, label, mutate)
    got = CliRunner().invoke(main, ["validate", str(path)])
    assert got.exit_code == 2, got.output
    assert got.exception is None or isinstance(got.exception, SystemExit), got.exception
    assert "Traceback" not in got.output
    where, _, message = got.output.removeprefix("error: ").partition(": ")
    file, _, line = where.rpartition(":")
    assert file == str(path) and line.isdigit(), got.output
    if key:
        assert int(line) == _line_of(path, key), got.output
    assert any(word in message for word in ("surrogate", "regular expression", "template",
                                            "TOOL_CALLS", "control character")), message  # fmt: skip


@pytest.mark.parametrize("example", ["debate.yaml", "self_consistency.yaml"])
@pytest.mark.parametrize("label", sorted(ACCEPTED))
async def test_what_validate_accepts_runs(tmp_path: Path, example: str, label: str) -> None:
    path = _write(tmp_path, example, label, ACCEPTED[label])
    assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0
    workflow = load(str(path))
    async with Session("sim") as session:
        result = await session.run(workflow, "What is 12 * 7?")
    assert result.answer
