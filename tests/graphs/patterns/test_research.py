"""The research pattern over real loopback HTTP to the simulated server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, Capabilities
from concilium.agents.ledger import CallRecord
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import Event, Graph, run
from concilium.graphs.patterns import research
from concilium.graphs.patterns._research import NO_EVIDENCE, parse_subquestions
from concilium.graphs.workflows import load_workflow
from concilium.serving import SimServer
from concilium.tools import ToolText
from concilium.tools.evidence import EvidenceStore

CORPUS = Path(__file__).resolve().parents[3] / "examples" / "research_corpus"
CEO = "Who is the chief executive of Tessary Labs?"
STAFF = "How many employees did Tessary Labs have at the end of 2025?"
NONSENSE = "What is the zorblax flux?"
INVENTED = ["handbook.md#L999-1000", "ghost.pdf#p1"]

RULES = [
    Rule(agent="lead", replies=[json.dumps({"questions": [CEO, STAFF, NONSENSE]})]),
    Rule(agent="researcher", match="Rewrite this question", replies=["zorblax"]),
    Rule(agent="researcher", match="Passage: .*Maren Solberg", replies=["Maren Solberg is the chief executive."]),
    Rule(agent="researcher", match="Passage: .*Headcount at year end: 472", replies=["Headcount at the end of 2025 was 472."]),
    Rule(agent="researcher", replies=["NONE"]),
    Rule(agent="writer", match="chief executive", replies=[f"Maren Solberg is the chief executive [handbook.md#L3-4] [{INVENTED[0]}]."]),
    Rule(agent="writer", match="employees", replies=[f"Staff numbered 472 [reports/annual_report_2025.pdf#p2; {INVENTED[1]}]. Staff were happy [reports/annual_report_2025.pdf#p2]."]),
    Rule(agent="checker", match="happy", replies=["No"]),
    Rule(agent="checker", replies=["Yes"]),
]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    store = EvidenceStore(CORPUS, path=tmp_path / "index.sqlite")
    store.refresh()
    return store


def _research(sim: SimServer, store: EvidenceStore) -> Graph:
    spec = sim.spec(capabilities=Capabilities(structured_output=True, logprobs=True))
    lead, researcher, writer, checker = (
        Agent(name, spec) for name in ("lead", "researcher", "writer", "checker")
    )
    return research(lead, researcher, writer, checker, store)


async def test_a_cited_verified_report_from_concurrent_researchers(store: EvidenceStore) -> None:
    async with SimServer(SimConfig(rules=RULES, latency=Latency(fixed=0.05))) as sim:
        result = await run(_research(sim, store), "Tell me about Tessary Labs.")
        stats = await sim.stats()
        received = await sim.requests()
    report, details = result.answer or "", result.details
    assert stats["max_in_flight"] >= 3  # the three researchers were asked together
    lead = [r for r in received if r["agent"] == "lead"]
    assert lead[0]["body"]["response_format"]["json_schema"]["name"] == "SubQuestions"
    for fake in INVENTED:
        assert fake not in report
    assert details["fabricated"] == INVENTED
    known = {p.id for p in store.passages()}
    assert [c["passage_id"] for c in details["citations"]] == [
        "handbook.md#L3-4",
        "reports/annual_report_2025.pdf#p2",
    ]
    assert all(c["passage_id"] in known for c in details["citations"])
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", report)}
    assert numbers == {1, 2}
    assert (
        "1. handbook.md, lines 3-4" in report
        and "2. reports/annual_report_2025.pdf, page 2" in report
    )
    findings = {f["question"]: f for f in details["findings"]}
    assert findings[NONSENSE]["note"] == NO_EVIDENCE and findings[NONSENSE]["claims"] == []
    ceo = findings[CEO]["claims"][0]
    assert ceo["text"] == "Maren Solberg is the chief executive." and ceo["passages"] == [
        "handbook.md#L3-4"
    ]
    checks = [r["body"] for r in received if r["agent"] == "checker"]
    assert all(b["logprobs"] is True and b["max_tokens"] == 1 for b in checks)  # P(yes) from tokens
    verdicts = details["verdicts"]
    assert len(verdicts) == 3 and [v["supported"] for v in verdicts] == [True, True, False]
    assert details["supported_rate"] == pytest.approx(2 / 3)
    assert "Staff were happy [2]. *(unsupported)*" in report
    assert details["votes"][0]["votes"] >= 1 and not details["partial"]
    assert result.calls == len(received) and result.usage.total_tokens > 0


async def test_no_evidence_anywhere_gives_the_guard_message(store: EvidenceStore) -> None:
    rules = [Rule(agent="lead", replies=['{"questions": ["What is the zorblax flux?"]}']),
             Rule(agent="researcher", replies=["zorblax"])]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(_research(sim, store), "zorblax?")
        received = await sim.requests()
    assert result.answer == NO_EVIDENCE
    assert {r["agent"] for r in received} == {"lead", "researcher"}  # nobody wrote


async def test_budget_exhaustion_gives_a_partial_report(store: EvidenceStore) -> None:
    async with SimServer(SimConfig(rules=RULES, latency=Latency(fixed=0))) as sim:
        try:
            result = await run(_research(sim, store), "Tessary?", budget=Budget(max_calls=9))
        except BudgetExceeded:  # pragma: no cover - the pattern must catch it
            pytest.fail("the budget error escaped the research pattern")
    assert result.details["partial"] is True
    assert "Partial report" in (result.answer or "")


def test_subquestions_parse_leniently_and_are_bounded() -> None:
    assert parse_subquestions("Plan:\n- A?\n- B?\n- A?\n- C?", 2) == ["A?", "B?"]
    assert parse_subquestions("nothing here", 3) == []


REVENUE = "What was the revenue in the latest annual report?"
CONFLICT_RULES = [
    Rule(agent="lead", match="Two documents disagree", replies=["B"]),
    Rule(agent="checker", match="Two documents disagree", replies=["B"]),
    Rule(agent="lead", replies=[json.dumps({"questions": [REVENUE]})]),
    Rule(agent="researcher", match="Rewrite this question", replies=["revenue annual report"]),
    Rule(agent="researcher", match="Passage: .*Revenue for 2025 was EUR 69", replies=["Revenue for 2025 was EUR 69 million."]),
    Rule(agent="researcher", match="Passage: .*Revenue for 2024 was EUR 46", replies=["Revenue for 2024 was EUR 46 million."]),
    Rule(agent="researcher", replies=["The revenue was EUR 999 million [handbook.md#L3-4]."]),
    Rule(agent="writer", replies=["Revenue was EUR 69 million [reports/annual_report_2025.pdf#p2]."]),
    Rule(agent="checker", replies=["Yes"]),
]  # fmt: skip


async def test_researchers_search_then_read_neighbours_and_ids_come_from_code(
    store: EvidenceStore,
) -> None:
    events: list[Event] = []
    async with SimServer(SimConfig(rules=CONFLICT_RULES, latency=Latency(fixed=0))) as sim:
        result = await run(_research(sim, store), "Revenue?", on_event=events.append)
        received = await sim.requests()
    (finding,) = result.details["findings"]
    tools = [e for e in events if e["type"] == "tool"]
    assert [t["tool"] for t in tools][:2] == ["search", "search"]
    assert {t["tool"] for t in tools[2:]} == {"read"} and len(tools) == 2 + len(finding["retrieved"])  # fmt: skip
    assert set(finding["retrieved"]) <= set(finding["read"])  # the hits, then their neighbours
    assert len(finding["read"]) > len(finding["retrieved"])
    known = {p.id for p in store.passages()}
    texts = {c["text"]: c["passages"] for c in finding["claims"]}
    assert texts == {
        "Revenue for 2025 was EUR 69 million.": ["reports/annual_report_2025.pdf#p2"],
        "Revenue for 2024 was EUR 46 million.": ["reports/annual_report_2024.pdf#p2"],
    }  # the EUR 999 fact citing the handbook is in no passage read: dropped, its ID ignored
    assert all(p in known for ps in texts.values() for p in ps)
    assert finding["steps"] <= 10 and result.calls == len(received)
    said = [str(e["text"]) for e in events if e["type"] == "turn" and e["agent"] == "researcher 1"]
    assert said[0].startswith("researching: ") and any(s.startswith("search 'revenue annual report'") for s in said)  # fmt: skip
    assert any(s.startswith("read reports/") for s in said)


async def test_passage_ids_reach_the_researchers_as_the_tools_values_not_their_text(
    store: EvidenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    searched, read = store.search_text, store.read_text

    async def search_text(query: str) -> ToolText:
        """Search the local documents (the text names no ID)."""
        return ToolText("some passages were found", (await searched(query)).value)

    async def read_text(passage_id: str) -> ToolText:
        """Read a passage by its ID (the text names no ID)."""
        return ToolText("the passage and its neighbours", (await read(passage_id)).value)

    monkeypatch.setattr(store, "search_text", search_text)
    monkeypatch.setattr(store, "read_text", read_text)
    async with SimServer(SimConfig(rules=CONFLICT_RULES, latency=Latency(fixed=0))) as sim:
        result = await run(_research(sim, store), "Revenue?")
    (finding,) = result.details["findings"]
    assert len(finding["read"]) > len(finding["retrieved"]) > 0  # the hits, then neighbours
    texts = {c["text"]: c["passages"] for c in finding["claims"]}
    assert texts == {
        "Revenue for 2025 was EUR 69 million.": ["reports/annual_report_2025.pdf#p2"],
        "Revenue for 2024 was EUR 46 million.": ["reports/annual_report_2024.pdf#p2"],
    }


async def test_a_second_run_on_the_record_replays_every_search_and_read(
    store: EvidenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    searched, read = store.search_text, store.read_text

    async def search_text(query: str) -> ToolText:
        """Search the local documents (counted)."""
        made.append(f"search {query}")
        return await searched(query)

    async def read_text(passage_id: str) -> ToolText:
        """Read a passage by its ID (counted)."""
        made.append(f"read {passage_id}")
        return await read(passage_id)

    monkeypatch.setattr(store, "search_text", search_text)
    monkeypatch.setattr(store, "read_text", read_text)
    record = CallRecord()
    events: list[Event] = []
    async with SimServer(SimConfig(rules=CONFLICT_RULES, latency=Latency(fixed=0))) as sim:
        first = await run(_research(sim, store), "Revenue?", record=record)
        calls = len(made)
        again = await run(_research(sim, store), "Revenue?", record=record, on_event=events.append)  # fmt: skip
    assert calls == first.tool_calls > 2 and len(made) == calls  # no tool ran again
    assert (again.tool_calls, again.tools_replayed, again.calls) == (0, calls, 0)
    assert again.details["findings"] == first.details["findings"]  # the replayed IDs, as values
    keys = [e["key"] for e in events if e["type"] == "tool"]
    assert keys[:2] == ["research/search/q0/0", "research/search/q0/1"]
    assert all(k.startswith("research/read/q0/") for k in keys[2:])


async def test_a_small_step_budget_reads_fewer_windows_instead_of_failing(
    store: EvidenceStore,
) -> None:
    async with SimServer(SimConfig(rules=CONFLICT_RULES, latency=Latency(fixed=0))) as sim:
        lead, researcher, writer, checker = (
            Agent(n, sim.spec()) for n in ("lead", "researcher", "writer", "checker")
        )
        graph = research(lead, researcher, writer, checker, store, max_steps=4)
        result = await run(graph, "Revenue?")
    (finding,) = result.details["findings"]
    assert finding["steps"] == 4 and not result.details["partial"]  # query, 2 searches, 1 fact
    assert len(finding["claims"]) <= 1


async def test_disagreeing_sources_are_settled_by_the_newer_document_and_reported(
    store: EvidenceStore,
) -> None:
    async with SimServer(SimConfig(rules=CONFLICT_RULES, latency=Latency(fixed=0))) as sim:
        result = await run(_research(sim, store), "Revenue?")
        received = await sim.requests()
    report, details = result.answer or "", result.details
    (conflict,) = details["conflicts"]
    assert conflict["rule"] == "newer document"
    assert conflict["kept"]["document"] == "reports/annual_report_2025.pdf"
    assert (conflict["kept"]["date"], conflict["dropped"]["date"]) == ("2026-02-12", "2025-02-14")
    # the lead saw the newer document as B and answered B; the checker saw it as A
    # and answered B too: position bias cannot agree with the rule every time
    assert conflict["checks"] == ["kept", "dropped"]
    first = {
        r["agent"]: m[1]
        for r in received
        if (m := re.search(r"\nA \((\S+),", r["body"]["messages"][-1]["content"]))
    }
    assert first == {"lead": "2025-02-14", "checker": "2026-02-12"}
    assert (
        '- Sources disagree: "Revenue for 2024 was EUR 46 million" in '
        'reports/annual_report_2024.pdf (2025-02-14) vs "Revenue for 2025 was EUR 69 million" '
        'in reports/annual_report_2025.pdf (2026-02-12); used "Revenue for 2025 was EUR 69 '
        'million" because reports/annual_report_2025.pdf is the newer document' in report
    )
    assert "1 of 2 checking agents agreed" in report
    assert report.index("## Conflicting sources") < report.index("## Sources")
    (prompt,) = [r["body"]["messages"][-1]["content"] for r in received if r["agent"] == "writer"]
    assert "EUR 69 million" in prompt and "EUR 46 million" not in prompt  # the loser is not written
    stale = next(c for c in details["findings"][0]["claims"] if "46" in c["text"])
    assert stale["superseded"] == "Revenue for 2025 was EUR 69 million."


async def test_when_the_rule_cannot_decide_the_checking_agents_majority_does(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "undated"
    folder.mkdir()
    (folder / "a.md").write_text("Revenue was EUR 46 million.\n")
    (folder / "b.md").write_text("Revenue was EUR 69 million.\n")
    undated = EvidenceStore(folder, path=tmp_path / "undated.sqlite")
    undated.refresh()
    rules = [
        Rule(agent="lead", match=r"A \(undated, b\.md\)", replies=["A"]),
        Rule(agent="checker", match=r"A \(undated, b\.md\)", replies=["A"]),
        Rule(agent="lead", match="Two documents disagree", replies=["B"]),
        Rule(agent="checker", match="Two documents disagree", replies=["B"]),
        Rule(agent="lead", replies=['{"questions": ["What was the revenue?"]}']),
        Rule(agent="researcher", match="Rewrite this question", replies=["revenue"]),
        Rule(agent="researcher", match="Passage: .*EUR 46", replies=["Revenue was EUR 46 million."]),
        Rule(agent="researcher", match="Passage: .*EUR 69", replies=["Revenue was EUR 69 million."]),
        Rule(agent="writer", replies=["Revenue was EUR 69 million [b.md#L1]."]),
        Rule(agent="checker", replies=["Yes"]),
    ]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(_research(sim, undated), "Revenue?")
    (conflict,) = result.details["conflicts"]
    assert conflict["rule"] == "checkers' vote" and conflict["kept"]["document"] == "b.md"
    assert conflict["checks"] == ["kept", "kept"]
    assert "most checking agents chose it; 2 of 2 checking agents agreed." in (result.answer or "")
    claims = {c["text"]: c["superseded"] for c in result.details["findings"][0]["claims"]}
    assert claims == {
        "Revenue was EUR 69 million.": "",
        "Revenue was EUR 46 million.": "Revenue was EUR 69 million.",
    }


@pytest.fixture
async def embeddings() -> AsyncIterator[tuple[str, list[list[str]]]]:
    """A loopback /v1/embeddings server (one axis per word of interest); yields its
    base URL and the batches of texts it embedded."""
    batches: list[list[str]] = []
    axes = ("revenue", "canteen", "staff")

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        batches.append(list(body["input"]))
        vectors = [[float(a in t.lower()) for a in axes] for t in body["input"]]
        return web.json_response({"data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]})  # fmt: skip

    app = web.Application()
    app.router.add_post("/v1/embeddings", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", batches
    await runner.cleanup()


def _workflow(folder: Path, chat: str, embed: str) -> Path:
    docs = folder / "docs"
    docs.mkdir(parents=True)
    (docs / "a.md").write_text("Revenue was EUR 69 million.\n\nThe canteen opens at nine.\n")
    path = folder / "research.yaml"
    path.write_text(f"""
name: hybrid_research
models:
  chat: {{model: hosted_vllm/sim, api_base: "{chat}"}}
  embed: {{model: hosted_vllm/test-embed, api_base: "{embed}"}}
agents:
  lead: {{model: chat}}
  researcher: {{model: chat}}
  embedder: {{model: embed}}
tools: {{documents: docs}}
workflow: {{kind: research, lead: lead, researcher: researcher, embedder: embedder}}
""")
    return path


async def test_an_embedder_agent_makes_search_hybrid_and_bm25_stands_in_when_it_fails(
    tmp_path: Path,
    embeddings: tuple[str, list[list[str]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the index goes under ~/.cache
    url, batches = embeddings
    rules = [
        Rule(agent="lead", match="Write one short paragraph", replies=["Revenue was EUR 69 million [a.md#L1]."]),
        Rule(agent="lead", replies=['{"questions": ["What was the revenue?"]}']),
        Rule(agent="researcher", match="Claim:", replies=["Yes"]),
        Rule(agent="researcher", match="Rewrite this question", replies=["revenue"]),
        Rule(agent="researcher", match="Passage: .*EUR 69", replies=["Revenue was EUR 69 million."]),
        Rule(agent="researcher", replies=["NONE"]),
    ]  # fmt: skip
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        hybrid = load_workflow(_workflow(tmp_path / "ok", sim.url, url))
        result = await run(hybrid.graph, "Revenue?")
        assert sorted(batches[0]) == ["Revenue was EUR 69 million.", "The canteen opens at nine."]
        assert ["What was the revenue?"] in batches and ["revenue"] in batches  # both queries
        assert result.details["citations"][0]["passage_id"] == "a.md#L1"
        down = load_workflow(_workflow(tmp_path / "down", sim.url, "http://127.0.0.1:9/v1"))
        fallback = await run(down.graph, "Revenue?")
    assert fallback.answer == result.answer and not fallback.details["partial"]
    assert "hybrid search fell back to BM25: embeddings: cannot reach" in caplog.text


async def test_a_plan_that_never_parses_researches_the_question_as_asked(
    store: EvidenceStore,
) -> None:
    # a small model's guided plan can run a string on until max_tokens (seen on the engine)
    broken = '{"questions": ["What is the name of the company \\u2013 \\u2013 \\u2013'
    rules = [Rule(agent="lead", replies=[broken]), *RULES[1:]]
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        result = await run(_research(sim, store), CEO)
        received = await sim.requests()
    lead = [r for r in received if r["agent"] == "lead"]
    assert len(lead) == 2  # the plan and its one repair turn, then no more planning
    assert result.details["questions"] == [CEO] and "SubQuestions" in result.details["plan_error"]
    assert "Maren Solberg" in (result.answer or "") and result.details["citations"]
    schema = lead[0]["body"]["response_format"]["json_schema"]["schema"]
    assert json.dumps(schema).count('"maxLength": 160') == 1  # each question is bounded


SUB_QUERIES = ["revenue 2025", "revenue 2024", "annual report revenue"]


async def test_decompose_searches_a_researchers_sub_queries_together_and_merges_them(
    store: EvidenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = store.search_text
    entered: list[str] = []
    all_in = asyncio.Event()
    results: list[ToolText] = []
    in_flight: list[int] = []  # searches entered and not yet answered, as each one proceeds

    async def search_text(query: str) -> ToolText:
        """Search the local documents (each call waits until all three are in flight)."""
        entered.append(query)
        if len(entered) == len(SUB_QUERIES):
            all_in.set()
        # sequential searches would never all be in: the first one would time out
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), timeout=10)
        in_flight.append(len(entered) - len(results))
        results.append(await asked(query))
        return results[-1]

    monkeypatch.setattr(store, "search_text", search_text)
    split = Rule(agent="researcher", match="Split the question below", replies=["\n".join(f"- {q}" for q in SUB_QUERIES)])  # fmt: skip
    events: list[Event] = []
    async with SimServer(SimConfig(rules=[split, *CONFLICT_RULES], latency=Latency(fixed=0))) as sim:  # fmt: skip
        lead, researcher, writer, checker = (
            Agent(n, sim.spec()) for n in ("lead", "researcher", "writer", "checker")
        )
        graph = research(lead, researcher, writer, checker, store, decompose=3)
        result = await run(graph, "Revenue?", on_event=events.append)
        received = await sim.requests()
    (finding,) = result.details["findings"]
    split_asks = [r for r in received if "Split the question below into at most 3" in str(r["body"])]  # fmt: skip
    assert len(split_asks) == 1 and not any("Rewrite this question" in str(r["body"]) for r in received)  # fmt: skip
    assert finding["queries"] == SUB_QUERIES and sorted(entered) == sorted(SUB_QUERIES)
    assert in_flight[0] == 3  # the first search to finish had all three in flight with it
    tools = [e for e in events if e["type"] == "tool"]
    assert [t["tool"] for t in tools[:3]] == ["search"] * 3 and {t["tool"] for t in tools[3:]} == {"read"}  # fmt: skip
    score: dict[str, float] = {}  # the merge: reciprocal-rank fusion of the hits' IDs
    for found in results:
        for rank, hit in enumerate(found.value, start=1):
            score[hit["id"]] = score.get(hit["id"], 0.0) + 1 / (60 + rank)
    assert finding["retrieved"] == sorted(score, key=lambda pid: -score[pid])[:3]
    texts = {c["text"]: c["passages"] for c in finding["claims"]}
    assert texts == {
        "Revenue for 2025 was EUR 69 million.": ["reports/annual_report_2025.pdf#p2"],
        "Revenue for 2024 was EUR 46 million.": ["reports/annual_report_2024.pdf#p2"],
    }  # IDs by code: the EUR 999 fact citing the handbook is in no passage read
    assert finding["steps"] <= 10 and result.calls == len(received)


async def test_a_workflow_file_turns_decomposition_on_with_decompose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the index goes under ~/.cache
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Revenue was EUR 69 million.\n\nThe canteen opens at nine.\n")
    rules = [
        Rule(agent="lead", match="Write one short paragraph", replies=["Revenue was EUR 69 million [a.md#L1]."]),
        Rule(agent="lead", replies=['{"questions": ["What was the revenue?"]}']),
        Rule(agent="researcher", match="Split the question below", replies=["revenue\nturnover"]),
        Rule(agent="researcher", match="Passage: .*EUR 69", replies=["Revenue was EUR 69 million."]),
        Rule(agent="researcher", replies=["Yes"]),
    ]  # fmt: skip
    events: list[Event] = []
    async with SimServer(SimConfig(rules=rules, latency=Latency(fixed=0))) as sim:
        path = tmp_path / "research.yaml"
        path.write_text(f"""
name: decomposed_research
models: {{chat: {{model: hosted_vllm/sim, api_base: "{sim.url}"}}}}
agents: {{lead: {{model: chat}}, researcher: {{model: chat}}}}
tools: {{documents: docs}}
workflow: {{kind: research, lead: lead, researcher: researcher, decompose: 2}}
""")
        result = await run(load_workflow(path).graph, "Revenue?", on_event=events.append)
    (finding,) = result.details["findings"]
    assert finding["queries"] == ["revenue", "turnover"]
    assert [e["tool"] for e in events if e["type"] == "tool"][:2] == ["search", "search"]
    assert finding["claims"][0]["passages"] == ["a.md#L1"]
    assert result.details["citations"][0]["passage_id"] == "a.md#L1"
