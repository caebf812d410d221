"""Text that looks like markup reaches every page as text (issue 21 item 8).

``<!--<script>`` inside the run's JSON made chromium read the rest of the page as
script, so the run page, History's view, the report file and the eval report rendered
nothing. Here every field a run or an eval shows (question, reply, answer, workflow
name, transcript, item id, gold) holds the strings that end a script or a comment
early; each page is opened in Debian's chromium and must finish its script, show the
text literally and raise no script error.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_browser import _browser, _need_browser

from concilium.cli import main

# every way a string could end a <script> element or a comment, or open one, early;
# "<!--<script>" last: once a "-->" follows it, the old page rendered again
HOSTILE = (
    "A-->B<!--evals-->C</script>D<![CDATA[E]]>F</SCRIPT >G</script\t>H<!--I\u2028J\u2029K"
    "&amp;L'\"M<img src=x onerror=alert(1)>N<!--<script>O"
)
IN_A_NAME = "w--><![CDATA[&'\"<!--<script>x"  # a file name: no "/"
QUESTION = f"Q{HOSTILE}?"
# a tab in a method's name has no glyph in the plot's font; matplotlib says so
pytestmark = pytest.mark.filterwarnings("ignore:Glyph 9:UserWarning")
TIMEOUT = 20_000  # ms: the old page never sets data-done


def _workflow(name: str) -> str:
    """A one-round debate of two agents on the simulated server, both replying HOSTILE."""
    boxed = "\\boxed{" + HOSTILE + "}"
    return json.dumps(
        {
            "name": name,
            "models": {"m": {"model": "hosted_vllm/sim", "api_base": "http://127.0.0.1:9/v1"}},
            "agents": {
                "a": {"model": "m", "max_tokens": 64},
                "b": {"model": "m", "max_tokens": 64},
            },
            "workflow": {"kind": "debate", "agents": ["a", "b"], "rounds": 1, "answer": "boxed"},
            "simulate": {
                "seed": 1,
                "latency": {"fixed": 0.01},
                "rules": [
                    {"agent": "a", "replies": [f"Reply {HOSTILE} so {boxed}"]},
                    {"agent": "b", "replies": [boxed]},
                ],
            },
        }
    )


def _watch(page: Any) -> list[str]:
    """The script errors and dialogs ``page`` will see, as they come."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: errors.append(f"dialog {d.message}"))
    return errors


async def _open(page: Any, url: str) -> None:
    """Open ``url`` and wait for the page's script to finish."""
    await page.goto(url)
    await page.wait_for_selector("body[data-done='1']", timeout=TIMEOUT)


async def _texts(page: Any, selector: str) -> list[str]:
    return await page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


async def _check_run(page: Any, record: dict[str, Any]) -> None:
    """The run view shows ``record``'s question, answer, replies and vote as written."""
    result = record["result"]
    assert await _texts(page, ".side p.q") == [f"{record['workflow']}: {record['question']}"]
    assert await _texts(page, "#answer") == [result["answer"]]
    turns = result["transcript"]
    assert await _texts(page, ".turn .ans") == [t["answer"] for t in turns]
    titles = await page.eval_on_selector_all(".turn .ans", "els => els.map(e => e.title)")
    assert titles == [t["text"] for t in turns]
    bars = await page.eval_on_selector_all(".vote .bar", "els => els.map(e => e.dataset.answer)")
    assert bars == list(result["votes"]["counts"])
    # the answer is the boxed text with its blanks made spaces; the reply holds it all
    assert "C</script>D" in result["answer"] and HOSTILE in turns[0]["text"]
    assert await page.locator("img").count() == 0


async def test_markup_in_every_field_of_a_run_shows_as_text_live_in_history_and_the_report(
    serve: Any, tmp_path: Path
) -> None:
    _need_browser()
    from concilium.app import Session
    from concilium.serving import create_app
    from concilium.ui import RunHistory, add_ui

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / f"{IN_A_NAME}.yaml").write_text(_workflow(f"w{HOSTILE}"))
    url = await serve(
        lambda port: add_ui(
            create_app({}, bind=("127.0.0.1", port)),
            session=Session("sim"),  # the simulated server the file describes
            state=tmp_path / "run.db",
            workflow_dirs=[flows],
        )
    )
    pw, browser = await _browser()
    try:
        page = await browser.new_page()
        errors = _watch(page)
        await page.goto(f"{url}/")
        await page.select_option("#workflow", IN_A_NAME)
        await page.fill("#question", QUESTION)
        await page.click("#go")  # the live page: the run's events arrive over its stream
        await page.wait_for_selector("body[data-done='1']", timeout=60_000)
        run_id = page.url.rsplit("/", 1)[1]
        record = RunHistory(tmp_path / "run.db").get(run_id)
        assert record is not None and record["result"] is not None, record
        assert (record["workflow"], record["question"]) == (IN_A_NAME, QUESTION)
        await _check_run(page, record)

        await page.goto(f"{url}/history")
        row = page.locator(f'tr.run[data-run="{run_id}"] td')
        assert (await row.all_text_contents())[2:] == [
            IN_A_NAME,
            QUESTION,
            record["result"]["answer"],
        ]
        await page.click(f'tr.run[data-run="{run_id}"] a')
        await page.wait_for_selector("body[data-done='1']", timeout=TIMEOUT)
        await _check_run(page, record)
        await _open(page, f"{url}/compare?run={run_id}&run={run_id}")
        assert len(await _texts(page, "#answer")) == 2
        assert await page.title() == "concilium · Side by side"

        out = tmp_path / "run.html"  # the same workflow by concilium run --report
        argv = ["run", str(flows / f"{IN_A_NAME}.yaml"), "--backend", "sim", "-i", QUESTION]
        got = await asyncio.to_thread(
            CliRunner().invoke, main, [*argv, "--json", "--report", str(out)]
        )
        assert got.exit_code == 0, got.output
        result = json.loads(got.output.strip().split("\n")[-1])  # U+2028 is no line end here
        offline = await (await browser.new_context(offline=True)).new_page()
        offline_errors = _watch(offline)
        await _open(offline, out.as_uri())
        shown = {"workflow": f"w{HOSTILE}", "question": QUESTION, "result": result}
        await _check_run(offline, shown)
        title = f"concilium · w{HOSTILE}: run {result['run_id']}"
        assert await offline.title() == title.replace("\t", " ")  # the title's blanks collapse
        assert errors == offline_errors == []
    finally:
        await browser.close()
        await pw.stop()


SENTENCE = "Maren Solberg is the chief executive of Tessary Labs"
IN_TEXT = HOSTILE.replace("\u2028", " ").replace("\u2029", " ")  # a U+2028 starts a line there


def _research_flow(tmp_path: Path) -> Path:
    """examples/research_assistant.yaml whose writer states SENTENCE with HOSTILE in it,
    citing the handbook's passage, which holds IN_TEXT."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    flows = tmp_path / "flows"
    shutil.copytree(examples / "research_corpus", flows / "research_corpus")
    handbook = flows / "research_corpus" / "handbook.md"
    lines = handbook.read_text().splitlines()
    lines[2] = lines[2] + " " + IN_TEXT  # within the passage [handbook.md#L3-4] cites
    handbook.write_text("\n".join(lines) + "\n")
    text = (examples / "research_assistant.yaml").read_text()
    assert text.count(SENTENCE + " [handbook.md#L3-4].") == 1
    hostile = json.dumps(f"{SENTENCE} {HOSTILE} [handbook.md#L3-4].")  # a YAML string too
    (flows / "research.yaml").write_text(text.replace(f'"{SENTENCE} [handbook.md#L3-4]."', hostile))
    return flows / "research.yaml"


async def test_markup_in_a_research_report_shows_as_text(tmp_path: Path) -> None:
    """The research report file (``run --report`` of a research workflow): the writer's
    report, a cited passage and the question all hold markup."""
    _need_browser()
    flow = _research_flow(tmp_path)
    out = tmp_path / "research.html"
    argv = ["run", str(flow), "--backend", "sim", "-i", QUESTION]
    got = await asyncio.to_thread(CliRunner().invoke, main, [*argv, "--json", "--report", str(out)])
    assert got.exit_code == 0, got.output
    result = json.loads(got.output.strip().split("\n")[-1])  # U+2028 is no line end here
    assert HOSTILE in result["answer"], result["answer"]
    pw, browser = await _browser()
    try:
        page = await (await browser.new_context(offline=True)).new_page()
        errors = _watch(page)
        await _open(page, out.as_uri())
        assert await _texts(page, ".research .report h4") == [QUESTION]
        report = "".join(await _texts(page, ".research .report p"))
        assert f"{SENTENCE} {HOSTILE} [1]." in report
        cited = page.locator(".research .report p a.cite[data-n='1'] >> nth=0")
        await cited.click()
        assert (
            IN_TEXT.replace("\t", " ")
            in await page.locator(".research .passage mark").text_content()
        )
        assert await page.locator("img").count() == 0
        assert errors == []
    finally:
        await browser.close()
        await pw.stop()


async def test_markup_in_an_eval_shows_as_text_in_the_report_and_the_evaluation_page(
    serve: Any, tmp_path: Path
) -> None:
    """Item id, question, gold, the method's name and its answers all hold markup."""
    _need_browser()
    from concilium.serving import create_app
    from concilium.ui import add_ui

    data = tmp_path / "data.jsonl"
    item = f"i{HOSTILE}".replace("/", "|")  # a URL path segment on the Evaluation page
    data.write_text(json.dumps({"id": item, "question": QUESTION, "answer": HOSTILE}) + "\n")
    flow = tmp_path / "hostile.yaml"
    method = f"m{HOSTILE}".replace("/", "|")
    flow.write_text(_workflow(method))
    out, report = tmp_path / "evals" / "run", tmp_path / "eval.html"
    argv = ["eval", str(data), str(flow), "--backend", "sim", "--out", str(out)]
    got = await asyncio.to_thread(CliRunner().invoke, main, [*argv, "--report", str(report)])
    assert got.exit_code == 0, got.output
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().split("\n") if line]
    assert (row["id"], row["method"], row["gold"]) == (item, method, HOSTILE)
    url = await serve(
        lambda port: add_ui(create_app({}, bind=("127.0.0.1", port)), eval_dirs=[out])
    )
    pw, browser = await _browser()
    try:
        page = await (await browser.new_context(offline=True)).new_page()
        errors = _watch(page)
        await _open(page, report.as_uri())
        assert await _texts(page, "tr.method td:first-child") == [method]
        assert await _texts(page, "tr.item td:first-child") == [item]
        await page.click("tr.item a")
        await page.wait_for_selector("#view0 .stats")
        assert await page.text_content("#item-id") == item
        assert await page.text_content("#item-gold") == HOSTILE
        assert await _texts(page, "#answer") == [row["answer"]]
        assert await _texts(page, ".turn .ans") == [t["answer"] for t in row["transcript"]]

        served = await browser.new_page()  # the Evaluation page and the item's own page
        served_errors = _watch(served)
        await served.goto(f"{url}/evals")
        await served.wait_for_load_state("load")
        assert await _texts(served, "tr.item td:first-child") == [item]
        await _open(served, await served.locator("tr.item a").evaluate("a => a.href"))
        assert await served.text_content("#item-gold") == HOSTILE
        assert await _texts(served, "#answer") == [row["answer"]]
        assert await page.locator("img:not(.plot)").count() == 0
        assert errors == served_errors == []
    finally:
        await browser.close()
        await pw.stop()
