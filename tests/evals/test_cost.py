"""What a derived point costs, computed by hand on a planted server: every request
costs 100 prompt tokens and 20 completion tokens per sample, so each figure below is
arithmetic on those two numbers (the model: ``concilium.evals._cost``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from concilium.agents import Agent, Capabilities, Choice, Completion, ModelSpec, Usage
from concilium.evals import EvalRecord, evaluate, summarise
from concilium.evals._cost import SamplingCost
from concilium.evals._plot import MethodPoint, pareto_frontier
from concilium.evals._sweep import Method
from concilium.graphs.patterns import self_consistency
from concilium.graphs.workflows import Workflow

PROMPT, PER_SAMPLE = 100, 20
# per item, the planted answers of samples 0..3 (gold is "4"): 2, 1 and 4 right of 4
ANSWERS = {"q0": ["4", "4", "5", "6"], "q1": ["4", "5", "5", "6"], "q2": ["4", "4", "4", "4"]}
RECORDS = [EvalRecord(id=i, question=f"item {i}?", answer="4") for i in ANSWERS]


class Planted:
    """A transport that answers item ``qN``'s samples in order, at a fixed cost."""

    def __init__(self) -> None:
        self.requests: list[int] = []  # n of each request
        self.next: dict[str, int] = {}

    async def chat(
        self, spec: ModelSpec, api_base: str | None, body: Mapping[str, Any], headers: Any
    ) -> Completion:
        n = int(body.get("n", 1))
        self.requests.append(n)
        item = next(i for i in ANSWERS if f"item {i}?" in str(body["messages"]))
        first = self.next.get(item, 0)
        self.next[item] = first + n
        texts = [f"\\boxed{{{ANSWERS[item][j]}}}" for j in range(first, first + n)]
        return Completion(
            tuple(Choice(t, "stop") for t in texts), Usage(PROMPT, PER_SAMPLE * n), "planted"
        )


def _method(name: str, samples: int, one_request: bool) -> tuple[Method, Planted]:
    planted = Planted()
    spec = ModelSpec("fake/planted", transport=planted, capabilities=Capabilities(n=one_request))
    graph = self_consistency(Agent("s", spec), samples=samples, answer="boxed", name=name)
    return Method(name, Workflow.of_graph(graph)), planted


@pytest.mark.parametrize("one_request", [True, False])
async def test_every_majority_at_k_point_costs_what_drawing_k_costs(
    tmp_path: Path, one_request: bool
) -> None:
    method, planted = _method("sc", 4, one_request)
    rows = await evaluate(RECORDS, [method], None, tmp_path)  # type: ignore[arg-type]
    assert planted.requests == ([4, 4, 4] if one_request else [1] * 12)
    (summary,) = summarise(rows, ["sc"], lambda row: lambda a: a == "4")
    # the whole method: one request of 4 (100 + 80 tokens) or four (4 * 120)
    assert summary["tokens_per_item"] == (180 if one_request else 480)
    assert summary["calls_per_item"] == (1 if one_request else 4)
    curve = {c["k"]: (c["tokens_per_item"], c["calls_per_item"]) for c in summary["majority_at_k"]}
    if one_request:  # the prompt once, k samples' completions
        assert curve == {1: (120, 1), 2: (140, 1), 3: (160, 1), 4: (180, 1)}
    else:  # k prompts and k completions
        assert curve == {1: (120, 1), 2: (240, 2), 3: (360, 3), 4: (480, 4)}
    # majority@1 is the mean fraction of right samples: (2/4 + 1/4 + 4/4) / 3
    assert summary["majority_at_k"][0]["accuracy"] == pytest.approx((0.5 + 0.25 + 1) / 3)


async def test_k1_of_a_one_request_method_costs_what_a_single_sample_does(tmp_path: Path) -> None:
    """The bug this replaces: k=1 was priced at the whole request's tokens / N (45 here),
    below a single sample's 120, so the frontier had it dominate the same thing."""
    sc, _ = _method("sc", 4, True)
    single, _ = _method("single", 1, True)
    rows = await evaluate(RECORDS, [single, sc], None, tmp_path)  # type: ignore[arg-type]
    one, many = summarise(rows, ["single", "sc"], lambda row: lambda a: a == "4")
    assert one["tokens_per_item"] == 120 and one["calls_per_item"] == 1
    k1 = many["majority_at_k"][0]
    assert (k1["tokens_per_item"], k1["calls_per_item"]) == (120, 1)
    points = [
        MethodPoint("single", one["tokens_per_item"], one["accuracy"]),
        MethodPoint("sc k=1", k1["tokens_per_item"] or 0, k1["accuracy"], curve="sc"),
    ]
    frontier = {p.name for p in pareto_frontier(points)}
    # same cost: k=1 dominates the single sample only if it is strictly more accurate
    assert ("single" in frontier) == (one["accuracy"] >= k1["accuracy"])


def test_chunked_requests_and_bad_k() -> None:
    # 6 samples in 3 requests of 2 (a server that caps n): 3 prompts of 100, 6 * 20
    chunks = SamplingCost(samples=6, requests=3, prompt_tokens=300, completion_tokens=120)
    assert [chunks.at(k) for k in (1, 2, 3, 6)] == [(120, 1), (140, 1), (260, 2), (420, 3)]
    with pytest.raises(ValueError, match="between 1 and 6"):
        chunks.at(7)
