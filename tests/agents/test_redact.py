"""Credentials never reach what concilium writes: a run whose ``api_base`` holds a
password and a key leaves neither in the trace, the state files, the events, the
error or stderr; trace and state files are readable by their owner only."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from concilium import ModelCallError, ModelSpec
from concilium.agents import private_file, redact
from concilium.agents._redact import scrub
from concilium.agents._tracing import JsonLinesSpanExporter
from concilium.agents._transports._base import status_error
from concilium.agents.ledger import SqliteCallRecord
from concilium.graphs import stream
from concilium.graphs.workflows import load_workflow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "self_consistency.yaml"
PASSWORD, KEY = "PASSw0rd9", "SECRETk3y9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:PW@h:1/v1", "http://user:***@h:1/v1"),
        ("https://TOKEN@h/v1", "https://***@h/v1"),
        ("http://h/v1?api-key=K&x=1", "http://h/v1?api-key=***&x=1"),
        ("http://h/v1?x=1&api_key=K", "http://h/v1?x=1&api_key=***"),
        ("https://h/b?sig=S&token=T#f", "https://h/b?sig=***&token=***#f"),
        ("?access_token=T&key=K", "?access_token=***&key=***"),
        ("Authorization: Bearer abc.DEF-1", "Authorization: Bearer ***"),
        ('{"api_key": "K", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("sent key sk-abcdefghijklmnopqr", "sent key sk-***"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),  # nothing to hide
        ("monkey=1 turkey=2", "monkey=1 turkey=2"),  # not a key parameter
    ],
)
def test_redact_masks_credentials_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_url_inside_json_stays_valid_json() -> None:
    text = json.dumps({"m": f'at "http://u:{PASSWORD}@h/v1?key={KEY}"', "a": f"Bearer {KEY}"})
    masked = redact(text)
    assert PASSWORD not in masked and KEY not in masked
    assert json.loads(masked)["m"] == 'at "http://u:***@h/v1?key=***"'


def test_a_servers_error_body_is_cut_and_scrubbed() -> None:
    body = f"bad key: Bearer {KEY} " + "x" * 1000
    err = status_error(ModelSpec("hosted_vllm/m"), f"http://u:{PASSWORD}@h/v1", 401, body)
    assert KEY not in str(err) and PASSWORD not in str(err)
    assert "x" * 300 not in str(err) and "Bearer ***" in str(err)
    assert err.status == 401 and "check api_key" in str(err)
    assert len(scrub("y" * 1000)) == 303


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_trace_and_record_files_are_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        exporter = JsonLinesSpanExporter(tmp_path / "t" / "trace.jsonl")
        exporter.shutdown()
        SqliteCallRecord(tmp_path / "run.calls.db").close()
        made = private_file(tmp_path / "deep" / "run.db")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "t" / "trace.jsonl") == 0o600
    assert _mode(tmp_path / "run.calls.db") == 0o600
    assert _mode(made) == 0o600
    made.write_text("kept")
    assert private_file(made).read_text() == "kept"  # an existing file is left as it is


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "concilium", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _leaks(data: str | bytes) -> list[str]:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return [secret for secret in (PASSWORD, KEY) if secret in text]


# The first api_base works (the simulated server ignores the credentials); the second
# fails, since a query in an api_base ends up before /chat/completions: the error path.
@pytest.mark.parametrize(("query", "code"), [("", 0), (f"?api-key={KEY}", 1)])
async def test_a_run_leaves_no_credential_in_trace_state_output_or_stderr(
    sim: Any, tmp_path: Path, query: str, code: int
) -> None:
    port = sim.url.split(":")[2].split("/")[0]
    base = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1{query}"
    trace = tmp_path / "trace.jsonl"
    returncode, out, err = await _cli(
        "run", str(WORKFLOW), "-i", "What is 12 * 7?", "--backend", base, "--json",
        "--trace", str(trace), "--state", str(tmp_path / "run.db"), "--run-id", "r1",
    )  # fmt: skip
    assert returncode == code, err
    if code:
        assert "status 404" in err and "user:***@127.0.0.1" in err
    else:
        assert json.loads(out)["answer"]
        assert '"server.address": "127.0.0.1"' in trace.read_text()  # the host alone
    assert not _leaks(out) and not _leaks(err)
    _check_files(tmp_path)


def _check_files(folder: Path) -> None:
    files = sorted(folder.iterdir())
    assert {"trace.jsonl", "run.db", "run.calls.db"} <= {p.name for p in files}
    for path in files:  # the SQLite journals included
        assert not _leaks(path.read_bytes()), path.name
    for path in files:  # SQLite gives its journals the mode of their database
        assert _mode(path) == 0o600, path.name


async def test_events_and_the_error_of_a_failing_run_hold_no_credential(sim: Any) -> None:
    port = sim.url.split(":")[2].split("/")[0]
    base = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1?api-key={KEY}"
    workflow = load_workflow(WORKFLOW, api_base=base)
    events: list[Any] = []

    async def collect() -> None:
        async for event in stream(workflow.graph, "What is 12 * 7?"):
            events.append(event)

    with pytest.raises(ModelCallError) as caught:
        await collect()
    assert any(e["type"] == "call_failed" for e in events)
    assert not _leaks(repr(events)) and not _leaks(str(caught.value))
    assert "api-key=***" in str(caught.value)
