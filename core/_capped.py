"""Untrusted files (PDF, DOCX, Parquet) parsed in a child process under a memory cap.

A file of a few kilobytes can decompress to gigabytes (a Flate stream in a PDF, a
zipped ``document.xml``, a dictionary-encoded Parquet column of one long string), and
the parsers have no bound of their own. So each file is read in a child Python process
that first lowers its own address-space limit (``RLIMIT_AS``) and CPU time, then
streams what it read back as JSON lines. The parent never holds more than the lines
it is given, each bounded; a child past its cap stops and the caller gets a
``CappedError`` saying which limit it hit. The child runs fixed readers of this
module picked from a table by name; nothing read is ever executed.

Example:
    >>> lines = list(capped_lines("docx", data=b"not a zip"))
    Traceback (most recent call last):
    ...
    concilium._capped.CappedError: not a readable DOCX (BadZipFile: File is not a zip file)
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

MEMORY_LIMIT = 768 * 1024 * 1024
"""The address space a child may use, in bytes (its resident memory stays below)."""
CPU_SECONDS = 60
"""The CPU time a child may use; the wall-clock deadline is twice this."""
MAX_PDF_PAGES = 2_000
"""A PDF with more pages than this is refused."""
MAX_TEXT_CHARS = 20_000_000
"""The most text one PDF or DOCX may yield."""
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
"""The most a DOCX may unpack to, all its zip entries together."""
MAX_ROW_GROUP_BYTES = 256 * 1024 * 1024
"""The largest uncompressed Parquet row group (as its metadata states it)."""
_ROWS_PER_BATCH = 32  # rows decoded at a time, so one batch of long values stays small

_EXIT_REFUSED, _EXIT_MEMORY = 2, 3


class CappedError(Exception):
    """A file the child could not read within its limits, or could not read at all;
    the message says which (it is written to follow the file's name)."""


class _Refused(Exception):
    """A reader's own refusal: the message is final."""


def _pdf(data: bytes, _arg: str) -> Iterator[str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        raise _Refused("the PDF is encrypted")
    if len(reader.pages) > MAX_PDF_PAGES:
        raise _Refused(f"{len(reader.pages):,} pages, over the limit of {MAX_PDF_PAGES:,}")
    total = 0
    for page in reader.pages:
        text = page.extract_text() or ""
        total += len(text)
        if total > MAX_TEXT_CHARS:
            raise _Refused(f"more than {MAX_TEXT_CHARS:,} characters of text")
        yield text


def _docx(data: bytes, _arg: str) -> Iterator[str]:
    import zipfile

    import docx

    # zipfile never unpacks an entry past the size its header states, so checking the
    # stated sizes bounds what python-docx can unpack
    unpacked = 0
    for entry in zipfile.ZipFile(io.BytesIO(data)).infolist():
        unpacked += entry.file_size
        if unpacked > MAX_UNPACKED_BYTES:
            raise _Refused(
                f"it unpacks to more than {MAX_UNPACKED_BYTES:,} bytes (at {entry.filename}, "
                f"{entry.file_size:,} bytes); a document this large is likely a zip bomb"
            )
    total = 0
    for paragraph in docx.Document(io.BytesIO(data)).paragraphs:
        total += len(paragraph.text)
        if total > MAX_TEXT_CHARS:
            raise _Refused(f"more than {MAX_TEXT_CHARS:,} characters of text")
        yield paragraph.text


def _parquet(_data: bytes, path: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    for number in range(file.metadata.num_row_groups):
        size = file.metadata.row_group(number).total_byte_size
        if size > MAX_ROW_GROUP_BYTES:
            raise _Refused(
                f"row group {number} is {size:,} bytes uncompressed, over the limit of "
                f"{MAX_ROW_GROUP_BYTES:,}; write the file with smaller row groups"
            )
    for batch in file.iter_batches(batch_size=_ROWS_PER_BATCH, use_threads=False):
        yield from batch.to_pylist()


# kind -> what the file is called, its reader, and the extra that installs the reader
_READERS: dict[str, tuple[str, Callable[[bytes, str], Iterator[Any]], str]] = {
    "pdf": ("PDF", _pdf, "research"),
    "docx": ("DOCX", _docx, "research"),
    "parquet": ("Parquet file", _parquet, "eval"),
}


def capped_lines(
    kind: str,
    *,
    data: bytes = b"",
    arg: str = "",
    max_line: int = MAX_TEXT_CHARS * 4,
    memory: int = MEMORY_LIMIT,
) -> Iterator[bytes]:
    """The JSON lines the reader ``kind`` makes of ``data`` (or of the file ``arg``),
    read in a child process under ``memory`` bytes of address space.

    A line longer than ``max_line`` is cut to ``max_line + 1`` bytes, so the caller can
    refuse it; closing the iterator early stops the child.

    Raises:
        CappedError: the child hit a limit or the file is not readable.
    """
    if kind not in _READERS:
        raise ValueError(f"no capped reader {kind!r}; the readers are {sorted(_READERS)}")
    command = [sys.executable, "-m", __name__, kind, str(memory), arg]
    # few malloc arenas: each thread's arena reserves 64 MiB of address space
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env
        ) as child,
    ):
        expired = threading.Event()
        timer = threading.Timer(2 * CPU_SECONDS, lambda: (expired.set(), child.kill()))
        timer.start()
        try:
            assert child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write(data)
                child.stdin.close()
            except BrokenPipeError:
                pass  # the child stopped early; its exit status says why
            while line := child.stdout.readline(max_line + 1):
                yield line
            code = child.wait()
        finally:  # also when the caller stops early: the child is not left running
            timer.cancel()
            if child.poll() is None:
                child.kill()
        if code:
            raise CappedError(_failure(code, errors, memory, timed_out=expired.is_set()))


def _failure(code: int, errors: IO[bytes], memory: int, *, timed_out: bool) -> str:
    errors.seek(0)
    lines = errors.read().decode("utf-8", "replace").strip().splitlines()
    said = lines[-1] if lines else ""
    limit = f"{memory // 2**20} MiB of memory"
    if code == _EXIT_REFUSED:
        return said
    if code == _EXIT_MEMORY or "MemoryError" in said or "bad_alloc" in said:
        return f"reading it needs more than {limit} (a compressed bomb?)"
    if timed_out or code == -signal.SIGXCPU:
        return f"reading it took longer than {CPU_SECONDS} s of CPU time"
    if code < 0:
        return f"the reader stopped at signal {-code}, most likely at its limit of {limit}"
    return f"the reader failed ({said or f'exit status {code}'})"


def _limit_self(memory: int) -> None:
    try:
        import resource
    except ImportError:  # not on this platform: the child runs without a cap
        return
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def _child(kind: str, memory: int, arg: str) -> int:
    label, reader, extra = _READERS[kind]
    data = sys.stdin.buffer.read()
    _limit_self(memory)
    out = sys.stdout.buffer
    try:
        for item in reader(data, arg):
            out.write(json.dumps(item, ensure_ascii=False, default=str).encode() + b"\n")
        out.flush()
    except MemoryError:
        return _EXIT_MEMORY
    except ImportError as exc:
        sys.stderr.write(
            f"reading a {label} needs {exc.name}; install it with pip install 'concilium[{extra}]'\n"
        )
        return _EXIT_REFUSED
    except _Refused as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_REFUSED
    except Exception as exc:  # the parsers raise many kinds on a broken file
        first = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(f"not a readable {label} ({type(exc).__name__}: {first})\n")
        return _EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
