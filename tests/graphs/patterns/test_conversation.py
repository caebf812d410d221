"""One rule for the conversation (issue 22, docs/methods.md "Conversation"): every
served workflow, sent a multi-turn few-shot request, gives each agent call the
system message, the few-shot turns in order and then its own prompt for the step,
which carries the question, as the last user message. Checked from what the
simulated server received."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from concilium import ConciliumError, UserError
from concilium.agents import Sampling, aclose
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.graphs import RunResult, run, run_sync
from concilium.graphs.patterns import research, self_consistency
from concilium.graphs.workflows import load_workflow
from concilium.serving import SimServer
from concilium.tools.evidence import EvidenceStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SYSTEM = "You are a careful assistant. Keep answers short."
SHOTS = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "What is 4 * 6?"},
    {"role": "assistant", "content": "24"},
]
QUESTION = "What is 12 * 7?"
REQUEST = [{"role": "system", "content": SYSTEM}, *SHOTS, {"role": "user", "content": QUESTION}]

# Steps whose prompt is, by the method, something else than an instruction wrapped
# around the question (each is documented in the pattern's module).
AS_ASKED = {  # steps asked the question as the user asked it, with no instruction of their own
    "chateval": "the candidates whose answers the referees judge",
    "mixture_of_agents": "the first layer's proposers (MoA)",
    "sparse_mixture": "the first layer's proposers (MoA)",
    "skeleton_of_thought": "the direct answer when the outline has no points",
}
NOT_QUOTED = {  # the step's prompt holds the question transformed, not verbatim
    "graph_of_thoughts": "the list of numbers taken from the question",
    "chain_of_agents": "the input is the source text; the manager gets its summary",
    "research_assistant": "the plan quotes it; later steps work on the planned sub-questions",
}
# The simulated server's replies follow no plan, tool or selection format: these runs
# fail after their first calls, which are still checked.
UNFOLLOWED = {"plan_and_execute", "react", "universal_self_consistency"}
# Base models take one text prompt, their template's (docs/methods.md): no chat to check.
NOT_CHAT = {"base_debate", "base_research", "base_sample", "base_self_consistency",
            "base_single"}  # fmt: skip


def served() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.yaml") if p.stem not in NOT_CHAT)


def test_the_exceptions_name_examples_that_exist() -> None:
    shipped = {p.stem for p in EXAMPLES.glob("*.yaml")}
    assert set(AS_ASKED) | set(NOT_QUOTED) | NOT_CHAT | UNFOLLOWED <= shipped


@pytest.mark.parametrize("workflow", served())
async def test_every_agent_gets_the_system_message_the_shots_in_order_and_the_question_last(
    workflow: str,
) -> None:
    async with SimServer(SimConfig(seed=1, latency=Latency(fixed=0))) as sim:
        try:
            graph = load_workflow(EXAMPLES / f"{workflow}.yaml", api_base=sim.url).graph
            if workflow in UNFOLLOWED:
                with pytest.raises(ConciliumError):
                    await run(graph, REQUEST)
            else:
                await run(graph, REQUEST)
            requests = await sim.requests()
        finally:
            await aclose()
    assert requests, f"{workflow} sent no request"
    for request in requests:
        sent: list[dict[str, Any]] = request["body"]["messages"]
        agent = request["agent"]
        shown = json.dumps(sent)[:600]
        assert sent[0]["role"] == "system" and sent[0]["content"].startswith(SYSTEM), shown
        assert sent[1:5] == SHOTS, shown  # the few-shot turns, in order, untouched
        assert sent[-1]["role"] == "user", shown
        own = sent[5:]  # what the pattern added after the conversation
        if workflow not in NOT_QUOTED:
            assert any(QUESTION in m["content"] for m in own if m["role"] == "user"), shown
        if sent == REQUEST:  # the pattern added nothing: only where the method asks so
            assert workflow in AS_ASKED, f"{workflow}: {agent} got nothing of its own: {shown}"


# The research assistant's steps, by the start of their prompt (prompts/templates/research/
# and search_decomposition/decompose.j2). Under the workflow's own scripted replies a run
# reaches every one of them: the test above, on the generic simulated server, finds no
# evidence after the first researcher steps.
RESEARCH_STEPS = {
    "plan": "Break the research question",
    "query": "Rewrite this question",
    "decompose": "Split the question below",
    "extract": "Sub-question:",
    "conflict": "Two documents disagree",
    "section": "Write one short paragraph",
    "verify": "Passage:",
}


def _step(prompt: str) -> str:
    return next(step for step, start in RESEARCH_STEPS.items() if prompt.startswith(start))


@pytest.mark.parametrize("decompose", [0, 2])
async def test_every_research_step_gets_the_conversation_and_a_seeded_rerun_is_identical(
    decompose: int, tmp_path: Path
) -> None:
    file = EXAMPLES / "research_assistant.yaml"
    scripted = load_workflow(file).sim
    assert scripted is not None
    # both years' revenue passages are read, so their sources disagree
    split = Rule(
        agent="researcher", match="Split the question", replies=["revenue 2025\nrevenue 2024"]
    )
    config = scripted.model_copy(update={"latency": Latency(fixed=0), "rules": [split, *scripted.rules]})  # fmt: skip
    store = EvidenceStore(EXAMPLES / "research_corpus", path=tmp_path / "index.sqlite")
    store.refresh()
    runs: list[RunResult] = []
    sent: list[list[dict[str, Any]]] = []
    async with SimServer(config) as sim:
        try:
            team = load_workflow(file, api_base=sim.url).agents
            lead, researcher, writer, verifier = (team[n] for n in ("lead", "researcher", "writer", "verifier"))  # fmt: skip
            graph = research(lead, researcher, writer, verifier, store, decompose=decompose)
            for _ in range(2):
                await sim.reset()
                runs.append(await run(graph, REQUEST, sampling=Sampling(seed=11)))
                sent.append([r["body"] for r in await sim.requests()])
        finally:
            await aclose()
    steps: list[str] = []
    for body in sent[0]:
        messages: list[dict[str, Any]] = body["messages"]
        shown = json.dumps(messages)[:600]
        # the system message (the lead's JSON schema appended to it), the shots in order
        assert messages[0]["role"] == "system" and messages[0]["content"].startswith(SYSTEM), shown
        assert messages[1:5] == SHOTS, shown
        assert len(messages) == 6 and messages[-1]["role"] == "user", shown  # then its own prompt
        steps.append(_step(messages[-1]["content"]))
        assert isinstance(body["seed"], int), shown
        if steps[-1] == "plan":
            assert QUESTION in messages[-1]["content"], shown
    expected = set(RESEARCH_STEPS) - {"decompose" if not decompose else "query"}
    assert set(steps) == expected, steps
    first, second = runs
    assert first.details["conflicts"] and first.details["verdicts"] and first.details["citations"]
    # the same seed, the same run (the replies are scripted: what this checks is that the
    # run repeats request for request, each call's seed included, and gives the same report)
    assert first.answer == second.answer
    assert [t["text"] for t in first.transcript] == [t["text"] for t in second.transcript]
    assert first.details["verdicts"] == second.details["verdicts"]
    same = [sorted(json.dumps(b, sort_keys=True) for b in bodies) for bodies in sent]
    assert same[0] == same[1]  # every request again (in arrival order, which concurrency may vary)


def test_self_consistency_keeps_its_answer_format_after_the_shots() -> None:
    seen: list[list[dict[str, Any]]] = []

    def reply(agent: str, i: int, messages: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return "\\boxed{84}"

    from concilium.agents import Agent, FakeModel

    sc = self_consistency(Agent("s", FakeModel(fn=reply).spec()), samples=1)
    assert run_sync(sc, REQUEST).answer == "84"
    (messages,) = seen
    assert messages[:5] == REQUEST[:5] and "\\boxed" in messages[-1]["content"]
    assert QUESTION in messages[-1]["content"]


def test_a_message_after_the_last_user_message_is_refused_with_the_fix() -> None:
    from concilium.agents import Agent, FakeModel

    sc = self_consistency(Agent("s", FakeModel(fn=lambda *_: "\\boxed{1}").spec()), samples=1)
    prefill = [*REQUEST, {"role": "assistant", "content": "The answer is"}]
    with pytest.raises(UserError, match=r"after its last user message.*end the messages with it"):
        run_sync(sc, prefill)
