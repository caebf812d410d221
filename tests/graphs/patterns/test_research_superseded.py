"""The research answer states what the evidence settles (issue 21 item 5): the writer
is given the settled facts, and a sentence that still states a superseded figure as
current is marked in place, by code, in the answer itself. Real loopback HTTP to the
simulated server; the writer's replies are planted to state the older figure."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from concilium.agents import Agent, Capabilities
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import run
from concilium.graphs.patterns import research
from concilium.graphs.patterns._citations import resolve_citations
from concilium.graphs.patterns._research import mark_superseded
from concilium.graphs.patterns._sources import Side, settle
from concilium.serving import SimServer
from concilium.tools.evidence import EvidenceStore, Passage

CORPUS = Path(__file__).resolve().parents[3] / "examples" / "research_corpus"
REVENUE = "What was the revenue in the latest annual report?"
CEO = "Who is the chief executive of Tessary Labs?"
OLD, NEW = "reports/annual_report_2024.pdf", "reports/annual_report_2025.pdf"
MARK = (
    f"*(superseded by {NEW} (2026-02-12), which gives "
    '"Revenue for 2025 was EUR 69 million" [{n}])*'
)

RULES = [
    Rule(agent="lead", match="Two documents disagree", replies=["B"]),
    Rule(agent="checker", match="Two documents disagree", replies=["A"]),
    Rule(agent="lead", replies=[json.dumps({"questions": [REVENUE, CEO]})]),
    Rule(agent="researcher", match="Rewrite this question", replies=["Tessary Labs revenue chief executive"]),
    Rule(agent="researcher", match="Sub-question: What was .*\n\nPassage: .*Revenue for 2025 was EUR 69", replies=["Revenue for 2025 was EUR 69 million."]),
    Rule(agent="researcher", match="Sub-question: What was .*\n\nPassage: .*Revenue for 2024 was EUR 46", replies=["Revenue for 2024 was EUR 46 million."]),
    Rule(agent="researcher", match="Sub-question: Who is .*\n\nPassage: .*Maren Solberg", replies=["Maren Solberg is the chief executive."]),
    Rule(agent="researcher", replies=["NONE"]),
    # the planted replies: the older figure stated as current, citing the older
    # document; again, uncited, in another section; beside it a sentence that
    # compares both figures and one that says the figure is past, both left alone
    Rule(agent="writer", match="answering: What was the revenue", replies=[
        f"Revenue in the latest annual report was EUR 46 million [{OLD}#p2]. "
        f"Revenue rose from EUR 46 million to EUR 69 million [{OLD}#p2] [{NEW}#p2]. "
        f"The 2024 report previously gave EUR 46 million [{OLD}#p2]."
    ]),
    Rule(agent="writer", match="answering: Who is the chief executive", replies=[
        "Maren Solberg is the chief executive [handbook.md#L3-4]. "
        "Under her, revenue was EUR 46 million."
    ]),
    Rule(agent="checker", replies=["Yes"]),
]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    store = EvidenceStore(CORPUS, path=tmp_path / "index.sqlite")
    store.refresh()
    return store


async def test_a_sentence_stating_the_superseded_figure_is_marked_in_the_answer(
    store: EvidenceStore,
) -> None:
    async with SimServer(SimConfig(rules=RULES, latency=Latency(fixed=0))) as sim:
        spec = sim.spec(capabilities=Capabilities(structured_output=True, logprobs=True))
        lead, researcher, writer, checker = (
            Agent(n, spec) for n in ("lead", "researcher", "writer", "checker")
        )
        graph = research(lead, researcher, writer, checker, store)
        result = await run(graph, "Tell me about Tessary Labs.")
        received = await sim.requests()
    report, details = result.answer or "", result.details
    # in the answer itself, every sentence that gives the old figure alone says in
    # place that it is superseded, and cites the newer document
    body = report.split("## Conflicting sources")[0]
    sources = {c["passage_id"]: c["number"] for c in details["citations"]}
    old, new = sources[f"{OLD}#p2"], sources[f"{NEW}#p2"]
    mark = MARK.format(n=new)
    assert f"Revenue in the latest annual report was EUR 46 million [{old}]. {mark}" in body
    assert f"Under her, revenue was EUR 46 million. {mark}" in body
    assert f"Revenue rose from EUR 46 million to EUR 69 million [{old}] [{new}]. The" in body
    assert f"previously gave EUR 46 million [{old}]." in body and body.count(mark) == 2
    for line in body.splitlines():
        for sentence in re.split(r"(?<=[.)])\s+(?=[A-Z])", line):
            if "46 million" in sentence and "69 million" not in sentence:
                assert "previously" in sentence, f"states the superseded figure: {sentence!r}"
    assert f"{new}. {NEW}, page 2" in report.split("## Sources")[1]
    assert [(s["document"], s["superseded_by"]) for s in details["superseded_sentences"]] == [
        (OLD, NEW),
        (OLD, NEW),
    ]
    assert (
        details["superseded_sentences"][1]["sentence"] == "Under her, revenue was EUR 46 million."
    )

    (conflict,) = details["conflicts"]
    assert conflict["kept"]["document"] == NEW and conflict["dropped"]["document"] == OLD
    assert conflict["kept"]["passages"] == [f"{NEW}#p2"]

    # the revenue section's writer was given the settled fact, not the old figure
    prompts = {
        m.group(1): r["body"]["messages"][-1]["content"]
        for r in received
        if r["agent"] == "writer"
        and (m := re.search(r"answering: (.+)", r["body"]["messages"][-1]["content"]))
    }
    assert (
        f"- Revenue for 2025 was EUR 69 million. [{NEW}#p2] ({NEW}, 2026-02-12, "
        f"supersedes {OLD}, 2025-02-14)" in prompts[REVENUE]
    )
    assert "EUR 46" not in prompts[REVENUE] and "Settled facts" not in prompts[CEO]


def test_marking_reads_decimal_figures_and_lines_without_a_full_stop() -> None:
    old = Passage("a.md#L1", "a.md", "L1", "The grant was EUR 5.5 million.", "h", 0)
    new = Passage("b.md#L1", "b.md", "L1", "The grant was EUR 6.25 million.", "h", 0)
    sides = (
        Side("The grant was EUR 5.5 million.", "a.md", "2024-01-01", 1, [old.id]),
        Side("The grant was EUR 6.25 million.", "b.md", "2025-01-01", 1, [new.id]),
    )
    draft = (
        "## The grant?\n\nThe grant was EUR 5.5 million [a.md#L1]\n\n"
        "Staff drank 5.5 litres of coffee. It was EUR 5.5 million."
    )
    cited = resolve_citations(draft, [old, new])
    text, records = mark_superseded(cited, [settle("The grant?", *sides)], [old, new])
    mark = '*(superseded by b.md (2025-01-01), which gives "The grant was EUR 6.25 million" [2])*'
    assert text == (
        f"## The grant?\n\nThe grant was EUR 5.5 million [1] {mark}\n\n"
        f"Staff drank 5.5 litres of coffee. It was EUR 5.5 million. {mark}"
    )  # the coffee neither cites a.md nor shares half the grant's words
    assert [r["sentence"] for r in records] == [
        "The grant was EUR 5.5 million [1]",
        "It was EUR 5.5 million.",
    ]
    assert cited.sources[1].passage_id == "b.md#L1"  # the newer passage joins the Sources
    # an unsettled disagreement dropped nothing: nothing is marked
    even = (replace(sides[0], date=None), replace(sides[1], date=None))
    unsettled = settle("The grant?", *even)
    assert unsettled.rule == "unsettled"
    again = resolve_citations(draft, [old, new])
    assert mark_superseded(again, [unsettled], [old, new]) == (again.text, [])
