"""DeepConf's confidences stored per sample and voted later, by hand.

A planted transport returns, for each sample, a trace of 3048 tokens: 1000 at token
confidence ``c1`` (each top-k list is two entries at ``-c1``), then 2048 at ``c2``;
the chosen tokens' logprob is set apart, so the mean logprob ranks the samples the
other way. With DeepConf's window of 2048 tokens the trace has 1001 windows, window i
holding 1000 - i tokens at ``c1``, so with ``d = c2 - c1``:

* lowest group = ``c2 - 1000 d / 2048`` (window 0);
* bottom 10% = the mean of the lowest ceil(100.1) = 101 windows (i = 0..100, 950
  tokens at ``c1`` on average) = ``c2 - 950 d / 2048``;
* tail (the last 2048 tokens) = ``c2``; mean = ``(1000 c1 + 2048 c2) / 3048``.

Self-consistency asks for top logprobs but scores nothing itself, so the eval's
confidence votes can only come from what the kit stored per sample.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from concilium.agents import Agent, Capabilities, Choice, Completion, ModelSpec, TokenLogprob, Usage
from concilium.cli import main
from concilium.evals import EvalRecord, evaluate, render_table, summarise, write_summary
from concilium.evals._scorers import NumericScorer
from concilium.evals._sweep import Method
from concilium.graphs.patterns import self_consistency
from concilium.graphs.workflows import Workflow

DIP, WINDOW = 1000, 2048
D = 2.048  # c2 - c1 where a sample dips: 1000 d / 2048 = 1.0 and 950 d / 2048 = 0.95
# per item, samples 0..2: (answer, c1, c2, chosen-token logprob)
PLANTED = {
    "q0": [("4", 3.0, 3.0, -3.0), ("5", 3.5 - D, 3.5, -2.0), ("5", 2.0, 2.0, -0.1)],
    "q1": [("7", 1.0, 1.0, -2.0), ("8", 2.0, 2.0, -1.0), ("8", 2.0, 2.0, -1.0)],
}
GOLD = {"q0": "4", "q1": "7"}
RECORDS = [EvalRecord(id=i, question=f"item {i}?", answer=GOLD[i]) for i in PLANTED]


def _trace(answer: str, c1: float, c2: float, chosen: float) -> Choice:
    words = [f"\\boxed{{{answer}}}"] + ["."] * (DIP + WINDOW - 1)
    confidences = [c1] * DIP + [c2] * WINDOW
    lps = tuple(
        TokenLogprob(w, chosen, ((w, -c), ("x", -c)))
        for w, c in zip(words, confidences, strict=True)
    )
    return Choice(" ".join(words[:3]), "stop", lps)


class Planted:
    """Item ``qN``'s three samples in one ``n=3`` request; counts the requests."""

    def __init__(self) -> None:
        self.requests = 0

    async def chat(
        self, spec: ModelSpec, api_base: str | None, body: Mapping[str, Any], headers: Any
    ) -> Completion:
        self.requests += 1
        assert body.get("logprobs") and body.get("top_logprobs") == 2, body
        item = next(i for i in PLANTED if f"item {i}?" in str(body["messages"]))
        planted = PLANTED[item][: int(body.get("n", 1))]
        return Completion(tuple(_trace(*p) for p in planted), Usage(100, 12), "planted")


def _right(row: Mapping[str, Any]) -> Any:
    return lambda answer: answer == GOLD[row["id"]]


def _accuracies(points: list[Any]) -> list[float]:
    return [round(p["accuracy"], 6) for p in points]


def _curves(votes: Any) -> dict[str, list[float]]:
    curves = {"weighted": _accuracies(votes["weighted_at_k"])}
    curves.update({f["name"]: _accuracies(f["points"]) for f in votes["deepconf"]})
    return curves


async def _evaluated(tmp_path: Path) -> tuple[Planted, list[Any]]:
    transport = Planted()
    caps = Capabilities(n=True, logprobs=True)
    agent = Agent("s", ModelSpec("fake/planted", transport=transport, capabilities=caps))
    graph = self_consistency(
        agent.with_options(logprobs=True, top_logprobs=2), samples=3, name="sc"
    )
    rows = await evaluate(RECORDS, [Method("sc", Workflow.of_graph(graph))], None, tmp_path)
    return transport, rows


async def test_stored_group_confidences_and_the_deepconf_votes_by_hand(tmp_path: Path) -> None:
    transport, rows = await _evaluated(tmp_path)
    assert transport.requests == 2  # one n=3 request per item
    stored = {
        r["id"]: [t["trace_confidences"] for t in r["transcript"] if "sample" in t] for r in rows
    }
    dipped = stored["q0"][1]  # c1 = 1.452, c2 = 3.5
    assert dipped == pytest.approx(
        {
            "lowest_group": 3.5 - 1.0,
            "bottom_10": 3.5 - 0.95,
            "tail": 3.5,
            "mean": (1000 * (3.5 - D) + 2048 * 3.5) / 3048,
        }
    )
    flat = stored["q0"][0]  # no dip: every score is 3
    assert flat == pytest.approx({"lowest_group": 3.0, "bottom_10": 3.0, "tail": 3.0, "mean": 3.0})

    (s,) = summarise(rows, ["sc"], _right, scorer=NumericScorer())
    assert s["scorer"] == "numeric"
    votes = s["confidence_votes"]
    assert votes is not None and votes["unavailable"] is None
    assert votes["score"] == "lowest_group"
    # lowest group: q0 ranks 4 (3.0) > 5 (2.5) > 5 (2.0); q1: 7 (1.0) below both 8s (2.0).
    # k=1: one right sample of three on each item. k=2 on q0: DeepConf keeps the more
    # confident of the pair ({4,5}: 4, {4,5'}: 4, {5,5'}: 5), so 2/3; the weighted vote
    # agrees (3.0 beats 2.5 and 2.0). q1 is wrong at k >= 2 by every rule. k=3 on q0:
    # DeepConf-low keeps conf >= 2.5 + 0.8 * 0.5 (the 4 alone: right); DeepConf-high
    # keeps >= 2.0 + 0.2 * 0.5 (4: 3.0 against 5: 2.5, right); the weighted vote has
    # 5 at 2.5 + 2.0 = 4.5 against 4 at 3.0 (wrong).
    assert _curves(votes) == {
        "weighted": [round(1 / 3, 6), round(1 / 3, 6), 0.0],
        "DeepConf-low": [round(1 / 3, 6), round(1 / 3, 6), 0.5],
        "DeepConf-high": [round(1 / 3, 6), round(1 / 3, 6), 0.5],
    }
    table = render_table([s])
    assert "weights: DeepConf lowest_group confidence" in table
    assert "keeps the 10% most confident of the k drawn, by lowest_group)" in table

    # the tail ranks q0's dipped 5 (3.5) first: DeepConf-low at k=3 keeps it (wrong),
    # and at k=2 keeps 5 in {4,5} and {5,5'}, 4 in {4,5'}: 1/3 on q0
    (tail,) = summarise(rows, ["sc"], _right, confidence_score="tail")
    tail_votes = tail["confidence_votes"]
    assert tail_votes is not None and tail_votes["score"] == "tail"
    low = next(f for f in tail_votes["deepconf"] if f["name"] == "DeepConf-low")
    assert _accuracies(low["points"]) == [round(1 / 3, 6), round(1 / 6, 6), 0.0]
    with pytest.raises(ValueError, match="unknown confidence score 'lowest'; use one of"):
        summarise(rows, ["sc"], _right, confidence_score="lowest")


async def test_rescore_reproduces_them_with_no_request_and_falls_back_to_mean_logprob(
    tmp_path: Path,
) -> None:
    transport, rows = await _evaluated(tmp_path)
    written, _ = write_summary(summarise(rows, ["sc"], _right, scorer=NumericScorer()), tmp_path)
    before = json.loads(written.read_text())
    result = await asyncio.to_thread(CliRunner().invoke, main, ["rescore", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert transport.requests == 2  # rescoring sent nothing
    again = json.loads(result.stdout)["methods"][0]
    assert {k: v for k, v in again.items() if k != "wall_s"} == {
        k: v for k, v in before["methods"][0].items() if k != "wall_s"
    }
    assert again["scorer"] == "numeric" and again["confidence_votes"]["score"] == "lowest_group"

    # rows without top-k logprobs' scores: the weights fall back to exp(mean_logprob),
    # which ranks q0's samples the other way (5' at -0.1 first): DeepConf-low at k=3
    # keeps the 5 (wrong), and the table says which confidence it used
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    stripped = []
    for line in lines:
        row = json.loads(line)
        for turn in row["transcript"]:
            turn.pop("trace_confidences", None)
        stripped.append(json.dumps(row))
    (tmp_path / "results.jsonl").write_text("\n".join(stripped) + "\n")
    (fallback,) = summarise(tmp_path)
    votes = fallback["confidence_votes"]
    assert votes is not None and votes["score"] == "mean_logprob"
    assert votes["confidence"] and votes["confidence"].startswith("exp(mean_logprob)")
    low = next(f for f in votes["deepconf"] if f["name"] == "DeepConf-low")
    # k=2 on q0: {4,5}: 5 (-2 > -3), {4,5'}: 5', {5,5'}: 5': all wrong; q1's 7 is
    # the least confident by either measure
    assert _accuracies(low["points"]) == [round(1 / 3, 6), 0.0, 0.0]
    assert "by mean_logprob)" in render_table([fallback])


async def test_a_stored_confidence_that_is_not_a_number_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    _, rows = await _evaluated(tmp_path)
    sample = next(t for t in rows[0]["transcript"] if "sample" in t)
    sample["trace_confidences"] = {"lowest_group": "high"}  # as a hand-edited file might
    (s,) = summarise(rows, ["sc"], _right)
    votes = s["confidence_votes"]
    assert votes is not None and votes["weighted_at_k"] == [] and votes["deepconf"] == []
    assert votes["unavailable"] == "the lowest_group confidences are not all finite and >= 0"
