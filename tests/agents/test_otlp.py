"""OTLP export: a real `concilium run` sends its GenAI spans to an OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parents[2]


class _Receiver:
    """Collects every span POSTed to /v1/traces, with the request headers."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()


@pytest.fixture
def receiver() -> Iterator[tuple[_Receiver, str]]:
    got = _Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with got.lock:
                got.paths.append(self.path)
                got.headers.append({k.lower(): v for k, v in self.headers.items()})
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`concilium run` in its own process: a fresh tracer provider, flushed at exit."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = [sys.executable, "-P", "-m", "concilium", "run", "examples/debate.yaml", "-b", "sim"]
    return subprocess.run(
        [*command, "-i", "What is 2 + 3?", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def _check_genai_tree(got: _Receiver) -> None:
    assert got.paths and set(got.paths) == {"/v1/traces"}
    by_id = {span.span_id: span for span in got.spans}
    names = [span.name for span in got.spans]
    (workflow,) = [s for s in got.spans if s.name.startswith("invoke_workflow ")]
    chats = [s for s in got.spans if s.name.startswith("chat ")]
    assert chats, names
    assert not workflow.parent_span_id  # the root
    for chat in chats:
        attrs = _attrs(chat)
        assert attrs["gen_ai.operation.name"] == "chat"
        assert chat.name == f"chat {attrs['gen_ai.request.model']}"
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] > 0
        # every chat hangs, through its ancestors, under the workflow span of the same trace
        assert chat.trace_id == workflow.trace_id
        node = chat
        while node.parent_span_id:
            node = by_id[node.parent_span_id]
        assert node.span_id == workflow.span_id
    assert _attrs(workflow)["gen_ai.operation.name"] == "invoke_workflow"


def test_spans_reach_the_collector_named_by_the_flag(receiver: tuple[_Receiver, str]) -> None:
    got, url = receiver
    done = _run(["--otlp-endpoint", url], {})
    assert done.returncode == 0, done.stderr
    _check_genai_tree(got)  # the CLI flushed before it exited


def test_spans_reach_the_collector_named_by_the_environment(
    receiver: tuple[_Receiver, str],
) -> None:
    got, url = receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_HEADERS": "x-team=concilium"}
    done = _run([], env)
    assert done.returncode == 0, done.stderr
    _check_genai_tree(got)
    assert all(h.get("x-team") == "concilium" for h in got.headers)


def test_a_bad_endpoint_is_a_user_error_with_the_credential_masked() -> None:
    done = _run(["--otlp-endpoint", "ftp://user:s3cret@example.invalid"], {})
    assert done.returncode == 2, done.stderr
    assert "s3cret" not in done.stderr
    assert "http://127.0.0.1:4318" in done.stderr
