"""Every command traces: `eval`, `serve mcp`, `ui` and `research`, each run as its own
process on the simulated server, send GenAI spans to an OTLP/HTTP receiver on loopback
(named by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), with the conventions' attribute
names: the workflow's name in `gen_ai.workflow.name` (and `gen_ai.agent.name`), the
model server's host in `server.address` and its port in `server.port`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parents[2]
DEBATE = "examples/debate.yaml"
CLI = [sys.executable, "-P", "-m", "concilium"]


class Receiver:
    """Every span POSTed to /v1/traces (OTLP/HTTP protobuf), decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        self.url = ""

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, ready: Callable[[list[Any]], bool], timeout: float = 60) -> list[Any]:
        """The spans once ``ready`` holds for them (a long-running server exports in batches)."""
        deadline = time.monotonic() + timeout
        while not ready(spans := self.snapshot()):
            assert time.monotonic() < deadline, [s.name for s in spans]
            time.sleep(0.1)
        return spans


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/traces"
            with got.lock:
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        got.spans.extend(scope_spans.spans)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


def _env(receiver: Receiver) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # a server exports every 100 ms rather than every 5 s, so the test need not wait
    return {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = getattr(kv.value, kv.value.WhichOneof("value"))
        is_list = kv.value.HasField("array_value")
        out[kv.key] = [v.string_value for v in value.values] if is_list else value
    return out


def _named(spans: list[Any], prefix: str) -> list[Any]:
    return [s for s in spans if s.name.startswith(prefix)]


def check_genai_names(spans: list[Any], *workflows: str) -> None:
    """The workflow spans name their workflow as the conventions do; every chat span
    names its server by host and port, not by URL."""
    runs = _named(spans, "invoke_workflow ")
    assert {s.name for s in runs} == {f"invoke_workflow {w}" for w in workflows}
    for span in runs:
        a = attrs(span)
        assert a["gen_ai.operation.name"] == "invoke_workflow"
        assert span.name == f"invoke_workflow {a['gen_ai.workflow.name']}"
        assert a["gen_ai.agent.name"] == a["gen_ai.workflow.name"]
    chats = _named(spans, "chat ")
    assert chats
    for chat in chats:
        a = attrs(chat)
        assert a["server.address"] == "127.0.0.1", a  # a host name, not http://...:PORT/v1
        assert isinstance(a["server.port"], int) and a["server.port"] > 0, a
        # every chat hangs under a workflow span of its own trace
        assert chat.trace_id in {w.trace_id for w in runs}


def test_eval_sends_one_trace_per_run_linked_to_the_eval_span(
    receiver: Receiver, tmp_path: Path
) -> None:
    data = tmp_path / "sums.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)} for i in (1, 2)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [*CLI, "eval", str(data), DEBATE, "examples/self_consistency.yaml", "-b", "sim"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        cwd=ROOT, env=_env(receiver), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = receiver.snapshot()  # the CLI flushed before it exited

    (root,) = _named(spans, "eval ")
    assert root.name == "eval sums.jsonl" and not root.parent_span_id
    assert attrs(root)["concilium.eval.methods"] == ["debate", "self_consistency"]
    items = _named(spans, "eval_item ")
    runs = {(attrs(s)["concilium.eval.item.id"], attrs(s)["concilium.eval.method"]) for s in items}
    assert runs == {(i, m) for i in ("q1", "q2") for m in ("debate", "self_consistency")}
    assert len(items) == 4
    # each run is a trace of its own, whose root links to the eval's span
    assert len({s.trace_id for s in items} | {root.trace_id}) == 5
    for item in items:
        assert not item.parent_span_id
        (link,) = item.links
        assert (link.trace_id, link.span_id) == (root.trace_id, root.span_id)
        (workflow,) = [s for s in spans if s.parent_span_id == item.span_id]
        assert workflow.trace_id == item.trace_id
        assert workflow.name == f"invoke_workflow {attrs(item)['concilium.eval.method']}"
    check_genai_names(spans, "debate", "self_consistency")


def test_research_sends_its_spans(receiver: Receiver) -> None:
    command = [*CLI, "research", "examples/research_corpus", "Who founded Tessary Labs?"]
    done = subprocess.run(
        [*command, "-b", "sim", "--json"],
        cwd=ROOT, env=_env(receiver), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = receiver.snapshot()
    check_genai_names(spans, "research_assistant")
    assert _named(spans, "execute_tool ")  # the documents tools, inside the same trace


def test_serve_mcp_over_stdio_sends_the_tool_calls_spans(receiver: Receiver) -> None:
    from mcp import Client, StdioServerParameters

    async def call() -> None:
        params = StdioServerParameters(
            command=CLI[0], args=[*CLI[1:], "serve", "mcp", DEBATE, "--backend", "sim"],
            cwd=str(ROOT), env=_env(receiver),
        )  # fmt: skip
        async with Client(params, read_timeout_seconds=120) as client:
            result = await client.call_tool("debate", {"question": "What is 17+25?"})
            assert not result.is_error
            # the server goes on serving: its spans arrive while it runs
            await asyncio.to_thread(receiver.wait_for, lambda s: bool(_named(s, "invoke_workflow")))

    asyncio.run(call())
    spans = receiver.snapshot()
    check_genai_names(spans, "debate")
    # the MCP SDK's server span of the tool call is the workflow span's parent
    (workflow,) = _named(spans, "invoke_workflow ")
    (tool_call,) = [s for s in spans if s.span_id == workflow.parent_span_id]
    assert tool_call.name == "tools/call debate"


def test_ui_sends_the_spans_of_the_runs_it_starts(receiver: Receiver, tmp_path: Path) -> None:
    import httpx

    command = [*CLI, "ui", "-b", "sim", "--port", "0", "--workflows", DEBATE]
    proc = subprocess.Popen(
        [*command, "--state", str(tmp_path / "ui.db")],
        cwd=ROOT, env=_env(receiver), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not (
            found := re.search(r"concilium ui at (http://127\.0\.0\.1:\d+)", "".join(lines))
        ):
            line = proc.stderr.readline()
            assert line, f"ui exited early: {''.join(lines)}"
            lines.append(line)
        url = found.group(1)
        reply = httpx.post(f"{url}/runs", data={"workflow": "debate", "question": "What is 2+2?"})
        assert reply.status_code == 303, reply.text
        # a span is exported after its children (they end first)
        spans = receiver.wait_for(lambda s: bool(_named(s, "invoke_workflow")))
        check_genai_names(spans, "debate")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
