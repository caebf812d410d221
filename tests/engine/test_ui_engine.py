"""``concilium ui --backend local`` as a user runs it (issue 14): the UI starts the
embedded engine on its first run, a base-model debate started from the page in
Debian's chromium runs on real tokens, and the page shows the lanes, rounds and vote
that the run recorded. A second run reuses the same engine (one start per UI), and
the UI stopped by SIGTERM stops its engine: none outlives it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import descendants, wait_gone

from concilium.serving import ManagedProcess

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def _need_browser() -> None:
    if not os.path.exists(CHROMIUM):
        message = "the engine UI test needs chromium (apt-get install -y chromium)"
        if os.environ.get("CONCILIUM_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (CONCILIUM_REQUIRE_BROWSER=1)")
        pytest.skip(message)


async def _run_from_page(page: Any, url: str, question: str) -> str:
    await page.goto(f"{url}/")
    await page.select_option("#workflow", "base_debate")
    await page.fill("#question", question)
    await page.click("#go")
    await page.wait_for_selector("body[data-done='1']", timeout=600_000)
    return page.url.rsplit("/", 1)[1]


async def _check_view(page: Any, result: dict[str, Any]) -> None:
    agents = sorted({t["agent"] for t in result["transcript"]})
    lanes = await page.eval_on_selector_all(
        ".lane[data-agent]", "els => els.map(e => e.dataset.agent)"
    )
    assert sorted(lanes) == agents == ["a", "b", "c"]
    for turn in result["transcript"]:
        cell = f'.round[data-round="{turn["round"]}"] .turn[data-agent="{turn["agent"]}"] .ans'
        assert await page.locator(cell).inner_text() == turn["answer"]
    bars = await page.eval_on_selector_all(
        ".vote .bar", "els => els.map(e => [e.dataset.answer, Number(e.dataset.count)])"
    )
    assert dict(bars) == result["votes"]["counts"]
    assert await page.inner_text("#answer") == result["answer"]


async def test_a_base_model_debate_runs_from_the_page_on_the_engine(tmp_path: Path) -> None:
    _need_browser()
    from playwright.async_api import async_playwright

    from concilium.ui import RunHistory

    state = tmp_path / "run.db"
    argv = [sys.executable, "-P", "-m", "concilium", "ui", "--backend", "local",
            "--port", "0", "--state", str(state)]  # fmt: skip
    ui = ManagedProcess("concilium ui", argv, ready_pattern=r"concilium ui at (?P<url>http://\S+?)/?$",
                        health_url="{url}/history", deadline=120, keep_lines=200)  # fmt: skip
    await ui.start()
    assert ui.url is not None
    pw = await async_playwright().start()
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        first = await _run_from_page(page, ui.url, "What is the capital of France?")
        record = RunHistory(state).get(first)
        assert record is not None and record["result"] is not None, list(ui.lines)[-20:]
        result = record["result"]
        assert result["calls"] == 6 and result["usage"]["completion_tokens"] > 0
        await _check_view(page, result)
        await page.screenshot(path=str(tmp_path / "ui-run-engine.png"), full_page=True)
        second = await _run_from_page(page, ui.url, "What is the capital of Japan?")
        assert second != first and RunHistory(state).get(second)["result"] is not None  # type: ignore[index]
    finally:
        await browser.close()
        await pw.stop()
        assert ui.pid is not None
        engine = descendants(ui.pid)  # the engine's server and its engine core
        await ui.stop()
    starts = [line for line in ui.lines if "starting the embedded engine" in line]
    assert len(starts) == 1, starts  # one engine for both runs
    # stopped by SIGTERM, the UI closed its session, engine included, and exited 0
    assert engine and ui.returncode == 0, (engine, ui.returncode, list(ui.lines)[-20:])
    assert await asyncio.to_thread(wait_gone, engine) == [], "an engine outlived the UI"
