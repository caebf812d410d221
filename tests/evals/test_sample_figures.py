"""The sampling figures of a summary, end to end through ``evaluate`` and ``summarise``
on planted transports: each sample's answer, confidence and token count is planted, so
the confidence votes, pass@k and the early-stopping replay are arithmetic by hand, and
each point's cost is the cost model's (``SamplingCost.at``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from concilium.agents import (
    Agent,
    Capabilities,
    Choice,
    Completion,
    ModelSpec,
    TokenLogprob,
    Usage,
)
from concilium.evals import EvalRecord, evaluate, render_table, summarise
from concilium.evals._cost import SamplingCost
from concilium.evals._sweep import Method
from concilium.graphs.patterns import confidence_consistency, self_consistency
from concilium.graphs.workflows import Workflow

PROMPT = 100
# per item: (answer, confidence, tokens) of samples 0..2; gold "4" and "7"
PLANTED = {
    "q0": [("4", 3.0, 2), ("5", 1.0, 4), ("5", 1.0, 6)],
    "q1": [("7", 1.0, 2), (None, 5.0, 4), ("8", 2.0, 6)],
}
GOLD = {"q0": "4", "q1": "7"}
RECORDS = [EvalRecord(id=i, question=f"item {i}?", answer=GOLD[i]) for i in PLANTED]


def _right(row: Mapping[str, Any]) -> Any:
    return lambda answer: answer == GOLD[row["id"]]


def _choice(answer: str | None, conf: float, tokens: int, logprobs: bool) -> Choice:
    """A reply of ``tokens`` tokens whose every top-k list is [-conf]: DeepConf's
    token confidence is conf at each token, so the trace's is conf exactly."""
    words = [f"\\boxed{{{answer}}}" if answer else "unsure"] + ["."] * (tokens - 1)
    lps = tuple(TokenLogprob(w, -conf, ((w, -conf),)) for w in words) if logprobs else None
    return Choice(" ".join(words), "stop", lps)


class Planted:
    """Answers item ``qN``'s samples in order, at 100 prompt tokens per request."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    async def chat(
        self, spec: ModelSpec, api_base: str | None, body: Mapping[str, Any], headers: Any
    ) -> Completion:
        item = next(i for i in PLANTED if f"item {i}?" in str(body["messages"]))
        first = self.next.get(item, 0)
        n = int(body.get("n", 1))
        self.next[item] = first + n
        planted = PLANTED[item][first : first + n]
        choices = tuple(_choice(*p, logprobs=bool(body.get("logprobs"))) for p in planted)
        return Completion(choices, Usage(PROMPT, sum(t for _, _, t in planted)), "planted")


def _agent(one_request: bool) -> Agent:
    caps = Capabilities(n=one_request, logprobs=True)
    return Agent("s", ModelSpec("fake/planted", transport=Planted(), capabilities=caps))


async def test_confidence_votes_pass_at_k_and_stopping_by_hand(tmp_path: Path) -> None:
    """DeepConf sampling, 3 samples in one request (12 completion tokens per item)."""
    graph = confidence_consistency(_agent(True), samples=3, name="deepconf")
    rows = await evaluate(RECORDS, [Method("deepconf", Workflow.of_graph(graph))], None, tmp_path)
    (s,) = summarise(rows, ["deepconf"], _right)
    cost = SamplingCost(samples=3, requests=1, prompt_tokens=100, completion_tokens=12)
    costs = [cost.at(k) for k in (1, 2, 3)]  # 104, 108, 112 tokens; 1 call

    def curve(entries: list[Any]) -> list[tuple[float, float | None, float | None]]:
        return [(round(e["accuracy"], 6), e["tokens_per_item"], e["calls_per_item"]) for e in entries]  # fmt: skip

    def at(*accuracies: float) -> list[tuple[float, float | None, float | None]]:
        return [(round(a, 6), t, n) for a, (t, n) in zip(accuracies, costs, strict=True)]

    votes = s["confidence_votes"]
    assert votes is not None and votes["unavailable"] is None
    assert votes["score"] == "lowest_group"  # DeepConf's, recorded per sample
    # tests/evals/test_votes.py works these out: k=1 1/3, k=2 (2/3 + 1/3)/2, k=3 (1 + 0)/2
    assert curve(votes["weighted_at_k"]) == at(1 / 3, 1 / 2, 1 / 2)
    low, high = votes["deepconf"]
    assert (low["name"], low["eta"], high["name"], high["eta"]) == ("DeepConf-low", 10, "DeepConf-high", 90)  # fmt: skip
    assert low["keeps"] == "the 10% most confident of the k drawn"
    # k=2: the threshold lies between the two (lo + 0.9 or 0.1 of the gap), so both
    # filters keep the more confident only, both if they tie. Item 0 (4: 3, 5: 1, 5: 1):
    # right, right, wrong; item 1 (7: 1, -: 5, 8: 2): the unparseable one, 8, the
    # unparseable one: 0. k=3, DeepConf-low keeps conf >= 1 + 0.8 * 2 = 2.6 on item 0
    # (4, right) and >= 2 + 0.8 * 3 = 4.4 on item 1 (no vote); DeepConf-high keeps
    # conf >= 1 on item 0 (all: 4 by 3 to 2) and >= 1.2 on item 1 (8 wins)
    assert curve(low["points"]) == at(1 / 3, (2 / 3 + 0) / 2, (1 + 0) / 2)
    assert curve(high["points"]) == at(1 / 3, (2 / 3 + 0) / 2, (1 + 0) / 2)
    # pass@k: one right sample of three on each item, 1 - C(2, k) / C(3, k)
    assert curve(s["oracle_pass_at_k"]) == at(1 / 3, 2 / 3, 1)
    # no rule stops within 3 samples of these: each draws all 3, at 100 + 2 + 4 + 6
    stops = {e["rule"]: e for e in s["early_stopping"]}
    assert list(stops) == ["beta", "majority", "entropy", "esc", "fixed"]
    for e in stops.values():
        assert (e["samples_per_item"], e["stopped"]) == (3, 0)
        assert (e["tokens_per_item"], e["calls_per_item"], e["tokens_basis"]) == (112, 1, "exact")
        # item 0: 5 beats 4 (wrong); item 1: 7 and 8 tie (1/2)
        assert e["accuracy"] == 0.25
    table = render_table([s])
    assert "DeepConf-low@k for deepconf (eta=10: keeps the 10% most confident" in table
    assert "pass@k for deepconf (oracle" in table and "fixed(N=3)" in table


@pytest.mark.parametrize("one_request", [True, False])
async def test_stopping_tokens_are_exact_only_where_each_sample_is_counted(
    tmp_path: Path, one_request: bool
) -> None:
    """Self-consistency without logprobs: one request of 3 knows only its total (k/N of
    it per sample: expected), three requests of 1 know each sample's (exact)."""
    graph = self_consistency(_agent(one_request), samples=3, name="sc")
    rows = await evaluate(RECORDS, [Method("sc", Workflow.of_graph(graph))], None, tmp_path)
    (s,) = summarise(rows, ["sc"], _right)
    votes = s["confidence_votes"]
    assert votes is not None and votes["weighted_at_k"] == [] and votes["deepconf"] == []
    assert votes["unavailable"] and "no sample carries a confidence" in votes["unavailable"]
    assert "confidence votes for sc: unavailable" in render_table([s])
    # majority(0.8) stops neither item (5 5 on q0 comes at sample 3; 7 - 8 on q1), nor
    # does any rule: all 3 samples. One request: 100 + 12; three: 300 + 2 + 4 + 6
    for e in s["early_stopping"]:
        assert e["samples_per_item"] == 3
        assert e["tokens_per_item"] == (112 if one_request else 312)
        assert e["calls_per_item"] == (1 if one_request else 3)
        assert e["tokens_basis"] == ("expected" if one_request else "exact")
