"""The UI in a real browser: Debian's chromium driven by Playwright, on loopback only."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from click.testing import CliRunner

from concilium.cli import main

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLOT_LOADED = "() => { const i = document.querySelector('img.plot'); return i && i.complete && i.naturalWidth > 0; }"


def _need_browser() -> None:
    missing = [
        what
        for what, ok in (
            ("chromium (apt-get install -y chromium)", os.path.exists(CHROMIUM)),
            (
                "playwright (pip install playwright)",
                shutil.which("python") is not None and _has_playwright(),
            ),
        )
        if not ok
    ]
    if missing:
        message = f"browser tests need {', '.join(missing)}"
        if os.environ.get("CONCILIUM_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (CONCILIUM_REQUIRE_BROWSER=1)")
        pytest.skip(message)


def _has_playwright() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


async def _browser() -> tuple[Any, Any]:
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    return pw, await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)


async def _check_view(page: Any, result: dict[str, Any]) -> None:
    """The page shows the lanes, rounds and vote of ``result`` (the run's own record)."""
    agents = sorted({t["agent"] for t in result["transcript"]})
    lanes = await page.eval_on_selector_all(
        ".lane[data-agent]", "els => els.map(e => e.dataset.agent)"
    )
    assert sorted(lanes) == agents
    for turn in result["transcript"]:
        row = page.locator(
            f'.round[data-round="{turn["round"]}"] .turn[data-agent="{turn["agent"]}"] .ans'
        )
        assert await row.inner_text() == turn["answer"]
    bars = await page.eval_on_selector_all(
        ".vote .bar", "els => els.map(e => [e.dataset.answer, Number(e.dataset.count)])"
    )
    assert dict(bars) == result["votes"]["counts"]
    assert await page.inner_text("#answer") == result["answer"]


async def test_a_debate_started_in_the_page_updates_live_and_opens_from_history(
    ui_url: str, tmp_path: Path
) -> None:
    _need_browser()
    pw, browser = await _browser()
    try:
        page = await browser.new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        await page.goto(f"{ui_url}/")
        await page.select_option("#workflow", "debate")
        await page.fill("#question", "What is 12 * 7?")
        await page.click("#go")
        await page.wait_for_selector("body[data-done='1']", timeout=60_000)
        run_id = page.url.rsplit("/", 1)[1]
        from concilium.ui import RunHistory

        record = RunHistory(tmp_path / "run.db").get(run_id)
        assert record is not None and record["result"] is not None
        await _check_view(page, record["result"])
        await page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        await page.goto(f"{ui_url}/history")
        await page.click(f'tr.run[data-run="{run_id}"] a')
        await page.wait_for_selector("body[data-done='1']")
        await _check_view(page, record["result"])
        await page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
        assert (tmp_path / "live.png").stat().st_size > 0
        assert all(url.startswith(ui_url) for url in seen), seen
    finally:
        await browser.close()
        await pw.stop()


async def test_a_report_opens_from_disk_with_the_network_off(tmp_path: Path) -> None:
    _need_browser()
    out = tmp_path / "run.html"
    got = await asyncio.to_thread(  # the CLI runs its own event loop
        CliRunner().invoke,
        main,
        [
            "run",
            "examples/debate.yaml",
            "--backend",
            "sim",
            "-i",
            "What is 12*7?",
            "--json",
            "--report",
            str(out),
        ],
    )
    assert got.exit_code == 0, got.output
    result = json.loads(got.output.strip().splitlines()[-1])
    pw, browser = await _browser()
    try:
        context = await browser.new_context(offline=True)
        page = await context.new_page()
        await page.goto(out.as_uri())
        await page.wait_for_selector("body[data-done='1']")
        await _check_view(page, result)
        await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        await browser.close()
        await pw.stop()


async def test_a_256_way_fan_out_shows_the_busiest_lanes_and_a_summary(tmp_path: Path) -> None:
    _need_browser()
    from concilium.ui._render import render_report

    events: list[dict[str, Any]] = []
    for i in range(256):
        for call in range(1 + (i % 3 == 0)):  # every third agent makes two calls
            key = f"k{i}.{call}"
            events.append(
                {
                    "type": "call_started",
                    "agent": f"a{i}",
                    "key": key,
                    "model": "m",
                    "t": 0.01 * call,
                }
            )
            events.append(
                {
                    "type": "call_finished",
                    "agent": f"a{i}",
                    "key": key,
                    "t": 0.01 * call + 0.005,
                    "latency_s": 0.005,
                    "prompt_tokens": 3,
                    "completion_tokens": 1,
                }
            )
    out = tmp_path / "wide.html"
    out.write_text(
        render_report(
            {"run_id": "w", "workflow": "wide", "question": "q", "events": events, "result": None}
        )
    )
    pw, browser = await _browser()
    try:
        page = await (await browser.new_context(offline=True)).new_page()
        await page.goto(out.as_uri())
        await page.wait_for_selector("body[data-done='1']")
        lanes = await page.eval_on_selector_all(
            ".lane[data-agent]", "els => els.map(e => e.dataset.agent)"
        )
        assert len(lanes) == 24 and all(int(name[1:]) % 3 == 0 for name in lanes)  # the busiest
        assert await page.get_attribute(".lane.summary", "data-more") == str(256 - 24)
    finally:
        await browser.close()
        await pw.stop()


async def test_the_evaluation_page_lists_the_methods_and_opens_an_items_transcript(
    eval_url: str, eval_dir: Path, tmp_path: Path
) -> None:
    _need_browser()
    summary = json.loads((eval_dir / "summary.json").read_text())["methods"]
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
    pw, browser = await _browser()
    try:
        page = await browser.new_page()
        await page.goto(f"{eval_url}/")
        await page.click("nav >> text=Evaluation")
        await page.wait_for_url(f"{eval_url}/evals")
        await page.wait_for_load_state("load")  # the table and the plot image
        shown = await page.eval_on_selector_all(
            "tr.method", "els => els.map(e => [e.dataset.method, Number(e.dataset.accuracy)])"
        )
        assert shown == [[s["method"], s["accuracy"]] for s in summary]
        await page.wait_for_function(PLOT_LOADED, timeout=10_000)  # the SVG loaded from the folder
        await page.screenshot(path=str(tmp_path / "evals.png"), full_page=True)
        row = next(r for r in rows if r["method"] == "debate")
        await page.click(f'tr.item[data-item="{row["id"]}"] a[href*="/debate/"]')
        await page.wait_for_selector("body[data-done='1']")
        assert await page.inner_text("#item-gold") == str(row["gold"])
        assert await page.inner_text("#item-correct") == ("yes" if row["correct"] else "no")
        for turn in row["transcript"]:
            cell = page.locator(
                f'.round[data-round="{turn["round"]}"] .turn[data-agent="{turn["agent"]}"] .ans'
            )
            assert await cell.inner_text() == turn["answer"]
        await page.screenshot(path=str(tmp_path / "item.png"), full_page=True)
        assert (tmp_path / "item.png").stat().st_size > 0
    finally:
        await browser.close()
        await pw.stop()


async def test_an_eval_report_file_opens_offline_and_shows_an_item(
    eval_dir: Path, tmp_path: Path
) -> None:
    _need_browser()
    summary = json.loads((eval_dir / "summary.json").read_text())["methods"]
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
    out = eval_dir.parents[1] / "eval.html"  # written by concilium eval --report
    pw, browser = await _browser()
    try:
        page = await (await browser.new_context(offline=True)).new_page()
        await page.goto(out.as_uri())
        await page.wait_for_selector("body[data-done='1']")
        shown = await page.eval_on_selector_all(
            "tr.method", "els => els.map(e => [e.dataset.method, Number(e.dataset.accuracy)])"
        )
        assert shown == [[s["method"], s["accuracy"]] for s in summary]
        await page.wait_for_function(PLOT_LOADED, timeout=10_000)
        row = next(r for r in rows if r["method"] == "self_consistency")
        await page.click(f'tr.item[data-item="{row["id"]}"] a[href*="self_consistency"]')
        await page.wait_for_selector("#view0 .stats")
        assert await page.inner_text("#item-gold") == str(row["gold"])
        assert await page.inner_text("#answer") == str(row["answer"])
        await page.screenshot(path=str(tmp_path / "eval-report.png"), full_page=True)
    finally:
        await browser.close()
        await pw.stop()


def _research_flows(tmp_path: Path) -> Path:
    """examples/research_assistant.yaml beside a copy of its corpus, the verifier saying
    No to the revenue sentence (so one claim is unsupported)."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    flows = tmp_path / "flows"
    shutil.copytree(examples / "research_corpus", flows / "research_corpus")
    text = (examples / "research_assistant.yaml").read_text()
    yes = '    - {agent: verifier, replies: ["Yes"]}'
    assert yes in text
    no = "    - {agent: verifier, match: 'Claim: Revenue', replies: [\"No\"]}\n"
    (flows / "research.yaml").write_text(text.replace(yes, no + yes))
    return flows


async def _check_research(page: Any, record: dict[str, Any]) -> None:
    """The Research report view of ``record``: [n] opens the cited passage, claims marked."""
    details = record["result"]["details"]
    sources = {s["number"]: s for s in record["sources"]}
    assert sorted(sources) == [c["number"] for c in details["citations"]] and sources
    assert await page.inner_text(".research .report h4") == record["question"]
    cites = await page.eval_on_selector_all(
        ".research .report p a.cite", "els => els.map(e => Number(e.dataset.n))"
    )
    assert sorted(set(cites)) == sorted(sources)
    for n, source in sources.items():
        await page.click(f'.research .report p a.cite[data-n="{n}"] >> nth=0')
        panel = page.locator(".research .passage")
        assert await panel.is_visible() and await panel.get_attribute("data-n") == str(n)
        assert await panel.locator(".doc").inner_text() == source["document"]
        assert await panel.locator(".loc").inner_text() == source["where"]
        assert source["text"] and await panel.locator("mark").inner_text() == source["text"]
    verdicts: dict[str, bool] = {}
    for v in details["verdicts"]:
        verdicts[v["claim"]] = verdicts.get(v["claim"], True) and v["supported"]
    rows = await page.eval_on_selector_all(
        "tr.claim", "els => els.map(e => e.dataset.supported === 'true')"
    )
    assert rows == list(verdicts.values()) and True in rows and False in rows
    unsupported = await page.eval_on_selector_all(
        ".report .claim-s.unsupported", "els => els.map(e => e.textContent)"
    )
    assert unsupported == [c for c, ok in verdicts.items() if not ok]


async def test_a_research_run_shows_its_report_with_citations_that_open_passages(
    serve: Any, tmp_path: Path
) -> None:
    _need_browser()
    from concilium.app import Session
    from concilium.serving import create_app
    from concilium.ui import RunHistory, add_ui

    flows = _research_flows(tmp_path)
    url = await serve(
        lambda port: add_ui(
            create_app({}, bind=("127.0.0.1", port)),
            session=Session("sim"),  # each run on the simulated server its file describes
            state=tmp_path / "run.db",
            workflow_dirs=[flows],
        )
    )
    question = "What do we know about Tessary Labs?"
    pw, browser = await _browser()
    try:
        page = await browser.new_page()
        await page.goto(f"{url}/")
        await page.select_option("#workflow", "research")
        await page.fill("#question", question)
        await page.click("#go")
        await page.wait_for_selector("body[data-done='1']", timeout=60_000)
        run_id = page.url.rsplit("/", 1)[1]
        record = RunHistory(tmp_path / "run.db").get(run_id)
        assert record is not None and record["result"] is not None, record
        await _check_research(page, record)  # live, as the run's stream delivered it
        await page.screenshot(path=str(tmp_path / "research-live.png"), full_page=True)
        await page.goto(f"{url}/runs/{run_id}")  # and from History
        await page.wait_for_selector("body[data-done='1']")
        await _check_research(page, record)

        out = tmp_path / "research.html"  # the same run as a report file, opened offline
        argv = ["run", str(flows / "research.yaml"), "--backend", "sim", "-i", question]
        argv += ["--json", "--report", str(out)]
        got = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            argv,
        )
        assert got.exit_code == 0, got.output
        offline = await (await browser.new_context(offline=True)).new_page()
        await offline.goto(out.as_uri())
        await offline.wait_for_selector("body[data-done='1']")
        result = json.loads(got.output.strip().splitlines()[-1])
        assert result["details"]["verdicts"] == record["result"]["details"]["verdicts"]
        await _check_research(offline, {**record, "result": result})
        await offline.screenshot(path=str(tmp_path / "research-report.png"), full_page=True)
    finally:
        await browser.close()
        await pw.stop()


async def test_beyond_loopback_the_key_in_the_address_carries_through_a_run(
    sim: Any, serve: Any, tmp_path: Path
) -> None:
    _need_browser()
    from concilium.app import Session
    from concilium.serving import create_app
    from concilium.ui import RunHistory, add_ui

    key = "a-long-enough-key/with+odd&chars"
    url = await serve(
        lambda port: add_ui(
            create_app({}, api_key=key, bind=("127.0.0.1", port)),
            session=Session(sim.url),
            state=tmp_path / "run.db",
            api_key=key,
        )
    )
    pw, browser = await _browser()
    try:
        page = await browser.new_page()
        refused: list[str] = []
        page.on("response", lambda r: r.status == 401 and refused.append(r.url))
        await page.goto(f"{url}/?key={quote(key, safe='')}")
        await page.select_option("#workflow", "debate")
        await page.fill("#question", "What is 12 * 7?")
        await page.click("#go")  # the form posts with the key, the run's page streams with it
        await page.wait_for_selector("body[data-done='1']", timeout=60_000)
        run_id = urlsplit(page.url).path.rsplit("/", 1)[1]
        record = RunHistory(tmp_path / "run.db").get(run_id)
        assert record is not None and record["result"] is not None
        await _check_view(page, record["result"])
        await page.click("nav >> text=History")  # navigation keeps the key
        await page.click(f'tr.run[data-run="{run_id}"] a')
        await page.wait_for_selector("body[data-done='1']")
        await _check_view(page, record["result"])
        await page.click("nav >> text=History")
        await page.check(f'tr.run[data-run="{run_id}"] input[type=checkbox]')
        await page.click("text=Compare two")
        await page.wait_for_selector("body[data-done='1']")
        assert urlsplit(page.url).path == "/compare"
        assert refused == []
    finally:
        await browser.close()
        await pw.stop()
