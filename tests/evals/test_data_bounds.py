"""Hostile evaluation data: a 10 KB Parquet file whose dictionary-encoded column decodes
to 1.2 GB, records nested 5,000 deep, a 5,000-digit number. Each ends in a DataError
naming the file, the row or line, the field and the limit; none in a traceback, and
no process reading them grows past 1 GB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from concilium.cli import main
from concilium.evals._data import DataError, load_records

GB = 1_000_000_000
WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "base_single.yaml"

# load the data in a fresh process (a 3 GB cap keeps a failing old reader from taking
# the machine) and report the error and the peak memory of it and its children
_LOAD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from concilium.evals._data import load_records
try:
    load_records(sys.argv[1])
    error = None
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"
# this process's own high-water mark (VmHWM: ru_maxrss of RUSAGE_SELF starts at the
# RSS of the process that forked it, pytest's) and the largest of its children
own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
print(json.dumps({"error": error, "peak": peak}))
"""


def _parquet_bomb(path: Path, rows: int, value_bytes: int) -> None:
    """``rows`` questions that all point at one dictionary entry of ``value_bytes``."""
    entry = pa.array(["x" * value_bytes])
    question = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), entry)
    ids = pa.array([str(i) for i in range(rows)])
    pq.write_table(pa.table({"id": ids, "question": question, "answer": ids}), path,
                   compression="zstd")  # fmt: skip


def _load_in_subprocess(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_parquet_dictionary_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.parquet"
    _parquet_bomb(path, rows=1200, value_bytes=2**20)
    assert path.stat().st_size < 20_000  # decodes to 1.2 GB
    result = _load_in_subprocess(path)
    assert result["error"] == (
        f"DataError: {path}:row 1: record is longer than the limit of 1,048,576 bytes; "
        "shorten it or split the item"
    )
    assert isinstance(result["peak"], int) and result["peak"] < GB


def test_a_parquet_bomb_past_the_memory_cap_names_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.parquet"
    _parquet_bomb(path, rows=64, value_bytes=32 * 2**20)  # 32 rows at a time: 1 GiB a batch
    result = _load_in_subprocess(path)
    assert result["error"] == (
        f"DataError: {path}: reading it needs more than 768 MiB of memory (a compressed bomb?)"
    )
    assert isinstance(result["peak"], int) and result["peak"] < GB


def test_ordinary_parquet_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.parquet"
    table = pa.table({"id": [1, 2], "question": ["2+2?", "3+3?"], "answer": [4, 6],
                      "metadata": [{"level": 1}, {"level": 2}]})  # fmt: skip
    pq.write_table(table, path)
    records = load_records(path)
    assert [(r.id, r.question, r.answer, r.metadata) for r in records] == [
        ("1", "2+2?", "4", {"level": 1}),
        ("2", "3+3?", "6", {"level": 2}),
    ]


def _jsonl(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"id": "a", "question": "1+1?", "answer": "2"}'


def test_data_nested_5000_deep_names_file_line_and_field(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    path = _jsonl(
        tmp_path, GOOD, f'{{"id": "b", "question": "q", "metadata": {deep}, "answer": "1"}}'
    )
    with pytest.raises(DataError) as caught:
        load_records(path)
    assert str(caught.value) == (
        f"{path}:2: field 'metadata': JSON nested deeper than 64 levels; flatten the structure"
    )


def test_a_5000_digit_number_names_file_line_and_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, GOOD, f'{{"id": "b", "question": "q", "answer": {"9" * 5000}}}')
    with pytest.raises(DataError) as caught:
        load_records(path)
    assert str(caught.value) == (
        f"{path}:2: field 'answer': a number of 5000 characters (99999999999999999999...) is "
        "past the limit of 100; write it as a string if it is an identifier"
    )


def test_eval_prints_the_error_without_a_traceback(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, '{"id": "b", "question": "q", "answer": "1", "metadata": '
                  + "{" + '"a": {' * 200 + "}" * 201 + "}")  # fmt: skip
    result = CliRunner().invoke(
        main, ["eval", str(path), str(WORKFLOW), "--backend", "sim", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert f"{path}:1: field 'metadata': JSON nested deeper than 64 levels (at $.metadata.a.a" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_parquet_nested_past_the_bound_names_row_and_field(tmp_path: Path) -> None:
    nested: object = 1
    for _ in range(70):
        nested = {"a": nested}
    path = tmp_path / "deep.parquet"
    pq.write_table(pa.table({"id": ["1"], "question": ["q"], "answer": ["a"],
                             "metadata": [nested]}), path)  # fmt: skip
    with pytest.raises(DataError) as caught:
        load_records(path)
    assert str(caught.value).startswith(
        f"{path}:row 1: field 'metadata': JSON nested deeper than 64 levels (at $.metadata.a.a"
    )
