"""OpenTelemetry spans with the GenAI semantic conventions.

concilium emits ``invoke_workflow {name}``, ``invoke_agent {name}``, ``chat {model}``
and ``execute_tool {name}`` spans through the global tracer provider (and, in
``concilium eval``, ``eval {data}`` with one linked ``eval_item {id}`` trace per run). With none set
every span would be a no-op, so none is started and no attributes are built: that
cost ~10 us of CPU per span, a tenth of concilium's own time per call. No exporter
is forced:
``configure_tracing(path)`` writes spans as JSON lines (the CLI's ``--trace FILE``);
``configure_tracing(otlp_endpoint=URL)`` or the standard ``OTEL_EXPORTER_OTLP_*``
variables send them to an OpenTelemetry collector through the official exporter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._redact import redact

tracer = trace.get_tracer("concilium")

# Sampling parameters that map onto gen_ai.request.* attributes.
_REQUEST_ATTRS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
}


_OFF: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)  # reusable


def tracing() -> bool:
    """Whether spans go anywhere: a tracer provider has been installed (``configure_tracing``,
    ``trace.set_tracer_provider``, or ``OTEL_PYTHON_TRACER_PROVIDER``).

    Example:
        >>> isinstance(tracing(), bool)
        True
    """
    # get_tracer_provider() looks in os.environ on every call until a provider is set
    # (~1 us, twice a model call); the API's own global says "none set" without that
    installed = getattr(trace, "_TRACER_PROVIDER", trace)  # `trace`: an API without it
    if installed is None and not _PROVIDER_FROM_ENV:
        return False
    return not isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )


# a provider named by OTEL_PYTHON_TRACER_PROVIDER is loaded by get_tracer_provider()
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def chat_attributes(
    model: str, provider: str, body: Mapping[str, Any], agent: str
) -> dict[str, Any]:
    """Attributes of a ``chat {model}`` span before the call."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm" if provider == "hosted_vllm" else provider,
        "gen_ai.request.model": model,
        "gen_ai.agent.name": agent,
    }
    for key, attr in _REQUEST_ATTRS.items():
        value = body.get(key)
        if value is not None:
            attrs[attr] = value
    n = body.get("n", 1)
    if n != 1:
        attrs["gen_ai.request.choice.count"] = n
    return attrs


def server_attributes(url: str | None) -> dict[str, Any]:
    """``server.address`` (the host alone) and ``server.port`` of a server's URL.

    Example:
        >>> server_attributes("http://127.0.0.1:8000/v1")
        {'server.address': '127.0.0.1', 'server.port': 8000}
        >>> server_attributes("https://api.example.com/v1")
        {'server.address': 'api.example.com', 'server.port': 443}
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    if not parts.hostname:
        return {}
    try:
        port = parts.port
    except ValueError:  # a port out of range: the host is still worth recording
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme)
    attrs: dict[str, Any] = {"server.address": parts.hostname}
    if port is not None:
        attrs["server.port"] = port
    return attrs


def record_error(span: trace.Span, exc: BaseException) -> None:
    """Mark ``span`` failed with ``exc``'s type and its message, credentials masked."""
    if span.is_recording():
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, redact(str(exc))[:200]))


def agent_span(name: str, **attrs: Any) -> AbstractContextManager[trace.Span]:
    """``invoke_agent {name}`` (INTERNAL: agents run in-process)."""
    if not tracing():
        return _OFF
    return tracer.start_as_current_span(
        f"invoke_agent {name}",
        kind=SpanKind.INTERNAL,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, **attrs},
    )


def workflow_span(name: str, **attrs: Any) -> Any:
    """A span ``invoke_workflow {name}`` around a whole run (a context manager).

    The name is in ``gen_ai.agent.name``, where the GenAI conventions v0.1.0 (their
    first release of their own) put it, and in ``gen_ai.workflow.name``, where
    semantic-conventions 1.37 to 1.41 and backends built on them look.

    Example:
        >>> with workflow_span("demo") as span:
        ...     span.is_recording() in (True, False)
        True
    """
    return tracer.start_as_current_span(
        f"invoke_workflow {name}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.agent.name": name,
            "gen_ai.workflow.name": name,
            **attrs,
        },
    )


def eval_span(data: str, methods: Sequence[str], items: int) -> AbstractContextManager[trace.Span]:
    """``eval {data}`` around a whole evaluation; each run in it is its own trace
    (``item_span``) linked to this span, so a backend shows one short trace per run."""
    if not tracing():
        return _OFF
    attrs = {"concilium.eval.data": data, "concilium.eval.methods": list(methods),
             "concilium.eval.items": items}  # fmt: skip
    return tracer.start_as_current_span(f"eval {data}", kind=SpanKind.INTERNAL, attributes=attrs)


def item_span(item: str, method: str) -> AbstractContextManager[trace.Span]:
    """``eval_item {item}``: the root of a new trace for one (item, method) run, linked
    to the span current when it starts (the eval's, if one is open)."""
    if not tracing():
        return _OFF
    from opentelemetry.context import Context

    eval_context = trace.get_current_span().get_span_context()
    return tracer.start_as_current_span(
        f"eval_item {item}",
        context=Context(),  # no parent: a trace of its own
        kind=SpanKind.INTERNAL,
        links=[trace.Link(eval_context)] if eval_context.is_valid else [],
        attributes={"concilium.eval.item.id": item, "concilium.eval.method": method},
    )


def chat_span(
    model: str, provider: str, body: Mapping[str, Any], agent: str
) -> AbstractContextManager[trace.Span]:
    """``chat {model}`` (CLIENT) with ``chat_attributes``, built only when traced."""
    if not tracing():
        return _OFF
    return tracer.start_as_current_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes=chat_attributes(model, provider, body, agent),
    )


def tool_span(
    name: str, description: str, call_id: str | None
) -> AbstractContextManager[trace.Span]:
    """``execute_tool {name}`` (INTERNAL: tools run in-process)."""
    if not tracing():
        return _OFF
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": description,
    }
    if call_id:
        attrs["gen_ai.tool.call.id"] = call_id
    return tracer.start_as_current_span(
        f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attrs
    )


# --------------------------------------------------------------- JSON-lines export


class JsonLinesSpanExporter:
    """Writes each finished span as one JSON line (``span.to_json()``, compact).

    A new file is created readable by its owner only (mode 0600): spans carry
    prompts' metadata, agent names and server addresses.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self._lock:
            for span in spans:
                # a last guard: an exception's message or an address may still hold a credential
                self._file.write(redact(span.to_json(indent=None)) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a base ``endpoint`` (``/v1/traces`` added, as the SDK does)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def otlp_endpoint_from_env() -> str | None:
    """The traces URL the standard ``OTEL_EXPORTER_OTLP_*`` variables name, if any."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces  # a signal-specific URL is used as written
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return _traces_url(base) if base else None


def _otlp_exporter(endpoint: str) -> Any:
    """The official OTLP/HTTP (protobuf) exporter to ``endpoint``; headers from the environment."""
    from urllib.parse import urlsplit

    from concilium._errors import UserError

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"OTLP endpoint {redact(endpoint)!r} is not an http(s) URL; "
            "give one like http://127.0.0.1:4318 (the collector's OTLP/HTTP port)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise UserError(
            f"an OTLP endpoint is set ({redact(endpoint)}) but the OTLP exporter is not installed; "
            "pip install opentelemetry-exporter-otlp-proto-http==1.45.2"
        ) from exc
    # OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, timeout and compression are read by the exporter itself
    return OTLPSpanExporter(endpoint=endpoint)


def configure_tracing(path: str | Path | None = None, *, otlp_endpoint: str | None = None) -> Any:
    """Install an SDK tracer provider; spans go to a JSON-lines file and/or an OTLP collector.

    Args:
        path: write spans here as JSON lines (the CLI's ``--trace FILE``).
        otlp_endpoint: an OTLP/HTTP collector's base URL (``/v1/traces`` is added
            unless present; the CLI's ``--otlp-endpoint``). Without it, the standard
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
            is used when set; ``OTEL_EXPORTER_OTLP_HEADERS`` adds headers.

    Returns the provider: call ``.shutdown()`` before exiting to flush the spans.

    Example:
        >>> provider = configure_tracing("/tmp/concilium-trace.jsonl")  # doctest: +SKIP
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

    endpoint = _traces_url(otlp_endpoint) if otlp_endpoint else otlp_endpoint_from_env()
    otlp = _otlp_exporter(endpoint) if endpoint else None
    provider = TracerProvider(resource=Resource.create({"service.name": "concilium"}))
    if path is not None:
        # JsonLinesSpanExporter has SpanExporter's methods without importing the SDK at import time
        exporter = cast("SpanExporter", JsonLinesSpanExporter(path))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp is not None:
        provider.add_span_processor(BatchSpanProcessor(otlp))
    trace.set_tracer_provider(provider)
    return provider
