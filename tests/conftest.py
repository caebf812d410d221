"""Shared fixtures. Network access beyond loopback is refused for every test."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

# the tracing tests' OTLP receiver: the `receiver` fixture (tests/otlp_receiver.py)
pytest_plugins = ["otlp_receiver"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # unix socket
        return True
    host = address[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _allowed(address):
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the network beyond 127.0.0.1 (asyncio's sockets included)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    """A simulated server (test double) on loopback, in this process, 20 ms latency."""
    from concilium.agents import aclose
    from concilium.agents.sim import Latency, SimConfig
    from concilium.serving import SimServer

    async with SimServer(SimConfig(seed=1, latency=Latency(fixed=0.02))) as server:
        yield server
        await aclose()


@pytest.fixture(scope="session")
def spans() -> Any:
    """An in-memory span exporter installed once as the global tracer provider."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter
