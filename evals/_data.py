"""Evaluation records: load ``{id, question, answer}`` items from JSONL (or Parquet) files.

A data file comes from a user (a GSM8K copy, a generated task), so it is read as untrusted
input: each record is validated (pydantic, ``extra="forbid"``), sizes are bounded per file
and per record, and every error names ``file:line``, the bad value and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from concilium._errors import UserError

__all__ = ["EvalRecord", "DataError", "load_records", "records_from", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 256 * 1024 * 1024
"""A data file larger than this is refused (read it in parts, or raise ``max_file_bytes``)."""
MAX_RECORD_BYTES = 1024 * 1024
"""One record (one JSONL line) larger than this is refused."""


class DataError(UserError):
    """A data file cannot be read as evaluation records; the message says where and the fix."""


class EvalRecord(BaseModel):
    """One item to evaluate: a question, its gold answer, optional choices and metadata.

    Example:
        >>> EvalRecord(id="q1", question="2+2?", answer="4").answer
        '4'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str
    choices: tuple[str, ...] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


def _coerce(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers as ids or answers are common in datasets; they become their text."""
    out = dict(raw)
    for key in ("id", "answer"):
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = str(value)
    return out


def _record(raw: object, where: str) -> EvalRecord:
    if not isinstance(raw, Mapping):
        raise DataError(
            f"{where}: a record must be a JSON object like "
            f'{{"id": "1", "question": "...", "answer": "..."}}, got {type(raw).__name__}'
        )
    try:
        return EvalRecord.model_validate(_coerce(raw))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in err.errors()
        )
        raise DataError(
            f"{where}: {problems}. A record has id, question and answer "
            "(and optionally choices and metadata)"
        ) from None


def records_from(rows: Iterable[tuple[str, object]]) -> list[EvalRecord]:
    """Validate ``(where, raw)`` rows into records, refusing duplicate ids.

    Example:
        >>> [r.id for r in records_from([("x:1", {"id": 1, "question": "q", "answer": 2})])]
        ['1']
    """
    seen: dict[str, str] = {}
    records: list[EvalRecord] = []
    for where, raw in rows:
        record = _record(raw, where)
        if record.id in seen:
            raise DataError(
                f"{where}: duplicate id {record.id!r} (first at {seen[record.id]}); "
                "give each record its own id"
            )
        seen[record.id] = where
        records.append(record)
    return records


def _jsonl_rows(path: Path) -> Iterable[tuple[str, object]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            where = f"{path}:{number}"
            if len(line) > MAX_RECORD_BYTES:
                raise DataError(
                    f"{where}: record is {len(line)} bytes, over the limit of "
                    f"{MAX_RECORD_BYTES}; shorten it or split the item"
                )
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(
                    f"{where}: not valid JSON ({err}); each line must be one JSON object"
                ) from None


def _parquet_rows(path: Path) -> Iterable[tuple[str, object]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow; install it with "
            "pip install 'concilium[eval]', or convert the file to JSONL"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises its own error types
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    for number, row in enumerate(table.to_pylist(), 1):
        yield f"{path}:row {number}", row


def load_records(path: str | Path, *, max_file_bytes: int = MAX_FILE_BYTES) -> list[EvalRecord]:
    """Load evaluation records from a ``.jsonl`` or ``.parquet`` file.

    Args:
        path: The data file.
        max_file_bytes: Files larger than this are refused.

    Raises:
        DataError: The file is missing, too large, or a record is bad (with file:line).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
        >>> _ = f.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\\n')
        >>> [r.answer for r in load_records(f)]
        ['2']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file; give a .jsonl or .parquet file")
    size = path.stat().st_size
    if size > max_file_bytes:
        raise DataError(
            f"{path}: {size} bytes, over the limit of {max_file_bytes}; "
            "split the file or pass a subset"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        records = records_from(_parquet_rows(path))
    elif suffix in (".jsonl", ".json", ".ndjson"):
        records = records_from(_jsonl_rows(path))
    else:
        raise DataError(f"{path}: unknown data format {suffix!r}; use .jsonl or .parquet")
    if not records:
        raise DataError(f"{path}: no records; each line holds one JSON object")
    return records
