"""An OTLP/HTTP receiver on loopback for the tracing tests (a real HTTP server that
decodes what the official exporter sends with ``opentelemetry-proto``). tests/conftest.py
loads it as a plugin, so every test can ask for the ``receiver`` fixture; the helpers
are imported as ``from otlp_receiver import Receiver, attrs, named``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Receiver:
    """Every span POSTed to /v1/traces (OTLP/HTTP protobuf), decoded, with each
    request's path and headers (names lower-cased)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
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

    def env(self) -> dict[str, str]:
        """This environment with the standard variable naming this receiver (and no
        other ``OTEL_`` setting of the machine's)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        # a server exports every 100 ms rather than every 5 s, so the test need not wait
        return {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": self.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
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
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


def attrs(span: Any) -> dict[str, Any]:
    """A decoded span's attributes as plain values (a list for an array)."""
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = getattr(kv.value, kv.value.WhichOneof("value"))
        is_list = kv.value.HasField("array_value")
        out[kv.key] = [v.string_value for v in value.values] if is_list else value
    return out


def named(spans: list[Any], prefix: str) -> list[Any]:
    """The spans whose name starts with ``prefix``."""
    return [s for s in spans if s.name.startswith(prefix)]
