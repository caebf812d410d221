"""The research pattern over real loopback HTTP to the simulated server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from concilium import BudgetExceeded
from concilium.agents import Agent, Budget, Capabilities
from concilium.graphs import Graph, run
from concilium.graphs.patterns import NO_EVIDENCE, parse_subquestions, research
from concilium.serving import Latency, Rule, SimConfig, SimServer
from concilium.tools import EvidenceStore

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
