"""Data loading, scorers and sweeps of concilium.evals."""

from __future__ import annotations

from pathlib import Path

import pytest

from concilium import UserError
from concilium.evals import (
    build_methods,
    default_scorer,
    load_records,
    parse_setting,
    scorer_from_name,
)
from concilium.evals._data import DataError
from concilium.evals._scorers import NumericScorer, OptionScorer

WORKFLOWS = Path(__file__).parent / "workflows"


def test_missing_field_and_duplicate_id_name_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": "q"}\n')
    with pytest.raises(DataError, match=rf"{data}:2: answer: Field required"):
        load_records(data)
    data.write_text('{"id": "a", "question": "q", "answer": "1"}\n\n{"id": "a", "question": "r", "answer": 2}\n')  # fmt: skip
    with pytest.raises(DataError, match=rf"{data}:3: duplicate id 'a' \(first at {data}:1\)"):
        load_records(data)


def test_sizes_are_bounded(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "question": "q", "answer": "1"}\n')
    with pytest.raises(DataError, match="over the limit"):
        load_records(data, max_file_bytes=10)


def test_parquet_records(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": ["x", "y"], "question": ["1+1?", "2+2?"], "answer": ["2", "4"]})
    pq.write_table(table, tmp_path / "d.parquet")
    assert [r.answer for r in load_records(tmp_path / "d.parquet")] == ["2", "4"]


def test_scorers() -> None:
    assert scorer_from_name("exact")("The Paris.", "paris")
    assert not scorer_from_name("exact")("Lyon", "paris")
    assert NumericScorer(tolerance=0.01)("about 3.14", "3.1416")
    assert not NumericScorer()("no number", "3")
    assert OptionScorer()("dog", "B", ["cat", "dog"])
    assert not OptionScorer()("A", "B", ["cat", "dog"])
    assert scorer_from_name(r"regex:^{gold}$")("42", "42")
    assert scorer_from_name("contains")("it is Rome I think", "rome")
    assert type(default_scorer(["1", "2"])).__name__ == "NumericScorer"
    assert type(default_scorer(["a", "2"])).__name__ == "ExactScorer"
    with pytest.raises(UserError, match="choose one of"):
        scorer_from_name("fuzzy")
    with pytest.raises(UserError, match="bad regular expression"):
        scorer_from_name("regex:(")


def test_sweep_builds_a_named_grid_and_validates_each_value() -> None:
    settings = [
        parse_setting("workflow.samples=1,3"),
        parse_setting("agents.solver.temperature=0.2,0.9"),
    ]
    methods = build_methods([WORKFLOWS / "sc.yaml"], settings)
    assert [m.name for m in methods] == [
        "self_consistency[samples=1,temperature=0.2]",
        "self_consistency[samples=1,temperature=0.9]",
        "self_consistency[samples=3,temperature=0.2]",
        "self_consistency[samples=3,temperature=0.9]",
    ]
    with pytest.raises(UserError, match="no key 'agnts' in the file; the keys there are"):
        build_methods([WORKFLOWS / "sc.yaml"], [parse_setting("agnts.solver.temperature=1")])
    with pytest.raises(UserError):  # the schema refuses a bad value, with file:line
        build_methods([WORKFLOWS / "sc.yaml"], [parse_setting("workflow.samples=0")])
    with pytest.raises(UserError, match=r"key\.path=value1,value2"):
        parse_setting("workflow.samples")
