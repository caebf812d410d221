"""DeepConf online's rule replayed on stored samples, every figure computed by hand on
planted rows (window 2, warm-up 3, budget 5), then through ``concilium
replay-deepconf`` (table and JSON), and from a real ``concilium eval`` on the
simulated server (a test double) whose samples carry their token confidences.

The planted eval (token confidences per sample; a window of 2 tokens):

item A (gold 7): w0 "7" [3, 3], w1 "8" [2.5, 2.5], w2 "8" [1, 1] (lowest groups 3, 2.5, 1);
    s3 "8" [3, .5, .5, 3, 3, 3] (its 3rd token's window is 0.5), s4 "7" [3, 3]. 14 tokens.
item B (gold 5): w0 "6" [2.2, 2.2], w1 "5" [2, 2], w2 "5" [1, 1] (lowest 2.2, 2, 1);
    s3 "6" [2, 2, 2], s4 "5" [3, 3]. 11 tokens.

keep top90 (the 10th percentile): A's threshold 1 + 1.5 * 0.2 = 1.3, voters 7 (3) and
8 (2.5), share 3/5.5 = .545; s3 is cut at its 3rd token (0.5 < 1.3); s4 votes 7: 6 vs
2.5, share .706. B's threshold 1 + 1 * 0.2 = 1.2, voters 6 (2.2), 5 (2): .524; s3 votes
6: 4.2 vs 2, .677; s4 votes 5: 5 vs 4.2, .543, winner 5.
* tau .95: neither reaches it: A 7 (right), 6 + 3 + 2 = 11 tokens, 5 traces, 1 cut; B
  5 (right), 11 tokens, 5 traces. Accuracy 1, 11 tokens an item, saved 1 - 22/25 = .12.
* tau .6: A stops after s4 (.706): 7, 11 tokens; B stops after s3 (.677) with 6 (wrong),
  9 tokens, 4 traces. Accuracy .5, 10 an item, saved 1 - 20/25 = .2, every item by consensus.

keep top10 (the 90th percentile): A's threshold 2.5 + .5 * .8 = 2.9, only w0 votes: 7,
share 1, stop; B's 2 + .2 * .8 = 2.16, only w0: 6 (wrong). Accuracy .5, 6 tokens an
item (the warm-up), saved 1 - 12/25 = .52, 3 traces, both taus alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from concilium.agents import AgentReply, TokenLogprob, Usage
from concilium.cli import main
from concilium.evals import render_replay, replay_deepconf
from concilium.evals._runner import sample_records
from concilium.evals._stats import wilson_interval
from concilium.graphs import current_run
from concilium.graphs.kit import PatternOptions, sample_turns

PLANTED = {
    "A": ("7", [("7", [3, 3]), ("8", [2.5, 2.5]), ("8", [1, 1]),
                ("8", [3, 0.5, 0.5, 3, 3, 3]), ("7", [3, 3])]),
    "B": ("5", [("6", [2.2, 2.2]), ("5", [2, 2]), ("5", [1, 1]),
                ("6", [2, 2, 2]), ("5", [3, 3])]),
}  # fmt: skip
SETTINGS: dict[str, Any] = {"warmup": 3, "window": 2}


def _row(item: str, method: str, with_confidences: bool = True) -> dict[str, Any]:
    gold, traces = PLANTED[item]
    transcript = []
    for i, (answer, confs) in enumerate(traces):
        turn: dict[str, Any] = {"agent": "s", "text": f"\\boxed{{{answer}}}", "answer": answer,
                                "sample": i, "request": i, "sample_tokens": len(confs)}  # fmt: skip
        if with_confidences:
            turn["token_confidences"] = [float(c) for c in confs]
        transcript.append(turn)
    answer = traces[0][0]
    return {"id": item, "method": method, "answer": answer, "gold": gold,
            "correct": answer == gold, "failed": False, "error": None, "calls": 5, "replayed": 0,
            "prompt_tokens": 50, "completion_tokens": sum(len(c) for _, c in traces),
            "wall_s": 0.1, "samples": [a for a, _ in traces], "choices": None,
            "transcript": transcript}  # fmt: skip


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    rows = [_row(i, "sampled") for i in PLANTED] + [_row(i, "plain", False) for i in PLANTED]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


# (keep, tau) -> accuracy, generated tokens an item, saved, traces, cut traces, consensus stops
BY_HAND = {
    ("top90", 0.95): (1.0, 11.0, 0.12, 5.0, 0.5, 0.0),
    ("top90", 0.6): (0.5, 10.0, 0.2, 4.5, 0.5, 1.0),
    ("top10", 0.95): (0.5, 6.0, 0.52, 3.0, 0.0, 1.0),
    ("top10", 0.6): (0.5, 6.0, 0.52, 3.0, 0.0, 1.0),
}


def test_every_figure_matches_the_hand_computation(planted: Path) -> None:
    report = replay_deepconf(planted, ["top90", "top10"], [0.95, 0.6], **SETTINGS)
    got = {(s.keep, s.consensus): s for s in report.settings}
    assert list(got) == list(BY_HAND) and {s.method for s in report.settings} == {"sampled"}
    for key, (accuracy, generated, saved, traces, cut, stops) in BY_HAND.items():
        s = got[key]
        assert s.items == 2 and s.stored_per_item == 12.5
        assert s.accuracy == accuracy and s.generated_per_item == generated
        assert s.saved == pytest.approx(saved) and s.traces_per_item == traces
        assert s.aborted_per_item == cut and s.consensus_stops == stops
        assert (s.low, s.high) == wilson_interval(round(accuracy * 2), 2)
    # the method without token confidences is named, with why, not silently left out
    assert "plain" in report.skipped and "token confidences" in report.skipped["plain"]


def test_a_budget_below_the_stored_samples_stops_there(planted: Path) -> None:
    # budget 4: item A never draws s4 (its vote stays 7 vs 8 at .545: 7), 9 tokens;
    # B draws s3 and stops at the budget with 6 (4.2 vs 2): wrong, 9 tokens
    (s,) = replay_deepconf(
        planted, ["top90"], [0.95], budget=4, method="sampled", **SETTINGS
    ).settings
    assert (s.accuracy, s.generated_per_item, s.traces_per_item) == (0.5, 9.0, 4.0)


def test_the_command_prints_the_table_and_json(planted: Path) -> None:
    args = ["replay-deepconf", str(planted), "--keep", "top90,top10", "--consensus", "0.95,0.6",
            "--warmup", "3", "--window", "2"]  # fmt: skip
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0, table.output
    lines = [ln for ln in table.output.splitlines() if ln.startswith("| sampled")]
    assert lines[1] == (
        "| sampled | top90 | 0.6 | 2 | 0.500 (0.09-0.91) | 10.0 | 12.5 | 20.0% | 4.50 | 0.50 | 100% |"
    )
    assert "not replayed: plain:" in table.output
    as_json = CliRunner().invoke(main, [*args, "--json"])
    report = json.loads(as_json.output)
    assert [(s["keep"], s["consensus"], s["accuracy"]) for s in report["settings"]] == [
        (k, t, v[0]) for (k, t), v in BY_HAND.items()
    ]
    assert report["warmup"] == 3 and report["window"] == 2 and "plain" in report["skipped"]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--keep", "top50"], "is not top10 or top90"),
        (["--consensus", "1.5"], "must be in (0, 1]"),
        (["--method", "plain"], "no token confidences"),
        (["--method", "nope"], "has no method 'nope'"),
        (["--budget", "6"], "fewer than the warmup/budget (6)"),
    ],
)
def test_what_cannot_be_replayed_is_refused_with_why(
    planted: Path, extra: list[str], said: str
) -> None:
    args = ["replay-deepconf", str(planted), "--warmup", "3", "--window", "2", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and said in result.output, result.output


def test_sample_turns_record_the_token_confidences_the_replay_reads() -> None:
    top = [(("a", -1.0), ("b", -3.0)), (("a", -0.5), ("b", -0.5))]  # C = 2.0, then 0.5
    lps = tuple(TokenLogprob("a", t[0][1], t) for t in top)
    reply = AgentReply("s", ("\\boxed{7}",), Usage(5, 2), 0.1, "m", logprobs_all=(lps,))
    (turn,) = sample_turns(current_run(), reply, PatternOptions("boxed").fmt, "q")
    assert turn.get("token_confidences") == [2.0, 0.5]
    (record,) = sample_records({"transcript": [turn]})
    assert record.get("token_confidences") == [2.0, 0.5]


def test_a_real_eval_on_the_simulated_server_can_be_replayed(tmp_path: Path) -> None:
    workflow = tmp_path / "cc.yaml"
    workflow.write_text(
        "name: cc\nmodels:\n  m: {model: hosted_vllm/sim, api_base: http://127.0.0.1:1/v1,"
        " capabilities: {n: true, logprobs: true}}\nagents:\n  s: {model: m, temperature: 0.9}\n"
        "workflow: {kind: confidence_consistency, agent: s, samples: 6, window: 4, top_logprobs: 3}\n"
        "simulate:\n  seed: 2\n  latency: {fixed: 0.0}\n  statistical:\n    accuracy: 0.6\n"
        "    wrong: ['80']\n    confidence: {separation: 1.5}\n"
        "    template: 'step by step by step, so \\boxed{{{answer}}}'\n"
    )
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{a}", "question": f"What is {a} * 7?", "answer": str(7 * a)}) + "\n"
                            for a in (11, 12, 13)))  # fmt: skip
    out = tmp_path / "out"
    ran = CliRunner().invoke(
        main, ["eval", str(data), str(workflow), "--backend", "sim", "--out", str(out)]
    )
    assert ran.exit_code == 0, ran.output
    report = replay_deepconf(out, ["top10"], [0.95], warmup=2, window=4)
    (s,) = report.settings
    assert s.method == "cc" and s.items == 3 and 2 <= s.traces_per_item <= 6
    assert s.generated_per_item <= s.stored_per_item
    assert "| cc | top10 | 0.95 | 3 |" in render_replay(report)
