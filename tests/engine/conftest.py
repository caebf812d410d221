"""The embedded engine for end-to-end tests: one server, started once per session.

These tests need `concilium engine install` (``make test`` runs it). Where the engine
is not installed they are skipped, unless CONCILIUM_REQUIRE_ENGINE=1 (set by
``make test``, so CI cannot pass by skipping them).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from concilium._errors import UserError
from concilium.serving.engine import EngineHome, local_engine


def _installed() -> bool:
    try:
        EngineHome().require()
    except UserError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    ours = [item for item in items if str(item.fspath).startswith(here)]
    for item in ours:
        item.add_marker(pytest.mark.engine)
        if is_async_test(item):  # on the engine fixture's loop: first, or the marker that
            # asyncio_mode=auto put there already wins and each test gets a loop of its own
            # (the shared engine's supervisor was then driven from a foreign loop, and a call
            # that failed at the engine raised "Timeout context manager should be used
            # inside a task" instead of being retried)
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)
    if ours:  # the tests that start engines of their own go before the shared one starts:
        # beside it, the router test's two replicas took a 24 GiB machine out of memory once
        # (an engine worker killed, the shared engine's tests refused), under a CPU hog
        first = items.index(ours[0])
        own = [item for item in ours if "engine" not in getattr(item, "fixturenames", ())]
        shared = [item for item in ours if item not in own]
        rest = [item for item in items if item not in ours]
        items[:] = [*rest[:first], *own, *shared, *rest[first:]]
    if ours and not _installed():
        if os.environ.get("CONCILIUM_REQUIRE_ENGINE") == "1":
            raise pytest.UsageError(
                "CONCILIUM_REQUIRE_ENGINE=1 but the engine is not installed; run `concilium engine install`"
            )
        skip = pytest.mark.skip(
            reason="the embedded engine is not installed (concilium engine install)"
        )
        for item in ours:
            item.add_marker(skip)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine() -> AsyncIterator[Any]:
    """One replica of vLLM's CPU build serving Gemma 3 270M base on both cores."""
    from concilium.agents import aclose

    async with local_engine(1) as running:
        yield running
        await aclose()
