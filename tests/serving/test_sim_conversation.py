"""The simulated server answers a conversation's last user message and draws its
replies from the request, never from the order requests arrive in (issue 22): the
same requests give the same replies however they interleave, so two evals on it
agree item for item."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from concilium.agents.sim import SimConfig, Statistical
from concilium.serving._sim_model import SimulatedModel

ROOT = Path(__file__).resolve().parents[2]
SHOTS = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "What is 4 * 6?"},
    {"role": "assistant", "content": "24"},
]


def chat(question: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [*SHOTS, {"role": "user", "content": question}], **fields}


def replies(model: SimulatedModel, body: dict[str, Any], agent: str = "a") -> list[str]:
    return [c.text for c in model.answer(body, agent).choices]


def test_a_few_shot_chat_is_answered_for_its_last_question() -> None:
    model = SimulatedModel(SimConfig(seed=1, statistical=Statistical(accuracy=1.0)))
    (text,) = replies(model, chat("What is 12 * 7?"))
    assert "\\boxed{84}" in text  # the old server answered the first shot: \boxed{5}


def test_a_follow_up_that_asks_nothing_is_answered_for_the_question_before_it() -> None:
    model = SimulatedModel(SimConfig(seed=1, statistical=Statistical(accuracy=1.0)))
    body = chat("What is 12 * 7?")
    body["messages"] += [{"role": "assistant", "content": "Let me think."},
                         {"role": "user", "content": "Give your final answer."}]  # fmt: skip
    assert "\\boxed{84}" in replies(model, body)[0]


def test_replies_do_not_depend_on_the_order_requests_arrive_in() -> None:
    config = SimConfig(seed=3, statistical=Statistical(accuracy=0.5))
    bodies = [chat(f"What is {i} * 7?", logprobs=True, top_logprobs=2) for i in range(2, 22)]
    forward, backward = SimulatedModel(config), SimulatedModel(config)

    def answers(model: SimulatedModel, order: list[int]) -> dict[int, Any]:
        return {i: model.answer(bodies[i], "a").choices for i in order}

    first = answers(forward, list(range(len(bodies))))
    second = answers(backward, list(reversed(range(len(bodies)))))
    assert first == second


def test_a_repeated_prompt_is_a_new_draw_and_a_seeded_one_is_the_same_every_time() -> None:
    model = SimulatedModel(SimConfig(seed=1))
    unseeded = [replies(model, chat("What is 12 * 7?"))[0] for _ in range(8)]
    seeded = [replies(model, chat("What is 12 * 7?", seed=7))[0] for _ in range(4)]
    assert len(set(unseeded)) > 1 and len(set(seeded)) == 1
    others = {replies(model, chat(f"What is {i} * 7?", seed=7))[0] for i in range(2, 12)}
    assert len(others) > 1  # the seed fixes a draw per prompt, not one draw for all


def evaluate(out: Path) -> tuple[list[tuple[str, str, Any]], Any]:
    argv = [sys.executable, "-P", "-m", "concilium", "eval", "examples/data/arithmetic.jsonl",
            "examples/debate.yaml", "examples/self_consistency.yaml", "--backend", "sim",
            "--limit", "20", "--concurrency", "16", "--out", str(out), "--json"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    answers = sorted((r["id"], r["method"], [t["text"] for t in r["transcript"]]) for r in rows)
    summary = json.loads(done.stdout)
    return answers, [(m["method"], m["correct"]) for m in summary["methods"]]


def test_two_evals_on_the_simulated_server_are_identical(tmp_path: Path) -> None:
    first, second = evaluate(tmp_path / "one"), evaluate(tmp_path / "two")
    assert first == second
