"""Shared by the pattern tests: waiting, with a deadline, for a simulated server to settle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from concilium.serving import SimServer

Settle = Callable[[SimServer], Awaitable[dict[str, Any]]]


@pytest.fixture
def settled() -> Settle:
    """``await settled(sim)``: the server's stats once no request is in flight
    (polled, failing after 15 s). A request that was cancelled counts as
    ``cancelled``; one that ran to the end as ``completed``."""

    async def wait(sim: SimServer) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15.0
        while (stats := await sim.stats())["in_flight"]:
            assert loop.time() < deadline, f"requests still in flight: {stats}"
            await asyncio.sleep(0.02)
        return stats

    return wait
