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

from concilium._capped import CappedError, capped_lines
from concilium._errors import UserError
from concilium._json import JsonBoundsError, load_json

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


def _field_at_fault(text: str | bytes) -> str | None:
    """The top-level field of a JSON object whose value is past a bound, found by
    decoding the object's values one at a time (None when it is not an object)."""
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    spans = json.JSONDecoder(parse_int=len, parse_float=len)  # spans only: no big int built
    at = len(text) - len(text.lstrip())
    if not text.startswith("{", at):
        return None
    at += 1
    key: object = None
    while True:
        try:
            key, at = spans.raw_decode(text, text.index('"', at))
            start = text.index(":", at) + 1
            start += len(text[start:]) - len(text[start:].lstrip())
            _, at = spans.raw_decode(text, start)
            load_json(text[start:at])
            at = text.index(",", at) + 1
        except (RecursionError, JsonBoundsError):
            return str(key)
        except ValueError:
            return None


def _parsed(where: str, line: bytes | str) -> object:
    """One record's JSON, or a DataError naming ``where`` and, for a bound, the field."""
    try:
        return load_json(line)
    except JsonBoundsError as err:
        field = _field_at_fault(line)
        named = f"field {field!r}: " if field else ""
        raise DataError(f"{where}: {named}{err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(
            f"{where}: not valid JSON ({err}); each line must be one JSON object"
        ) from None


def _too_long(where: str, line: bytes) -> DataError | None:
    if len(line) <= MAX_RECORD_BYTES:
        return None
    return DataError(
        f"{where}: record is longer than the limit of {MAX_RECORD_BYTES:,} bytes; "
        "shorten it or split the item"
    )


def _jsonl_rows(path: Path) -> Iterable[tuple[str, object]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            where = f"{path}:{number}"
            if error := _too_long(where, line):
                raise error
            if line.strip():
                yield where, _parsed(where, line)


def _parquet_rows(path: Path) -> Iterable[tuple[str, object]]:
    """Rows decoded in a child process under a memory cap, one JSON line each (a few
    kilobytes of Parquet can decode to gigabytes), held to the limits of JSONL records."""
    number = 0
    try:
        for number, line in enumerate(
            capped_lines("parquet", arg=str(path), max_line=MAX_RECORD_BYTES), 1
        ):
            where = f"{path}:row {number}"
            if error := _too_long(where, line):
                raise error
            yield where, _parsed(where, line)
    except CappedError as err:
        after = f" (after row {number})" if number else ""
        raise DataError(f"{path}: {err}{after}") from None


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
