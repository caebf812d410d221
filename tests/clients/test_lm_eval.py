"""lm-evaluation-harness scores a served workflow (``local-chat-completions``, 2-shot
multi-turn) as docs/serving.md describes.

lm-eval (pinned in the test extra; with its ``api`` extra it needs no torch) runs as
its own CLI on a local JSON task whose data is written here (CI cannot reach the
Hugging Face hub); ``concilium serve api`` serves tests/clients/arith.yaml on its
simulated server (a test double).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from concilium.serving import ManagedProcess

LM_EVAL = Path(sys.executable).with_name("lm_eval")
WORKFLOW = Path(__file__).with_name("arith.yaml")
SHOTS = [("What is 2 * 3?", "6"), ("What is 5 + 4?", "9")]
QUESTIONS = [("What is 12 * 7?", "84"), ("What is 9 + 10?", "19"), ("What is 6 * 6?", "36")]


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ManagedProcess]:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", str(WORKFLOW),
            "--backend", "sim", "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=120)  # fmt: skip
    yield await proc.start()
    await proc.stop()


def write_task(folder: Path) -> None:
    for split, rows in (("train", SHOTS), ("test", QUESTIONS)):
        lines = (json.dumps({"question": q, "answer": a}) for q, a in rows)
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    task = {
        "task": "concilium_arith",
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {s: str(folder / f"{s}.jsonl") for s in ("train", "test")}
        },
        "training_split": "train",
        "test_split": "test",
        "fewshot_split": "train",
        "output_type": "generate_until",
        "doc_to_text": "{{question}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n\n"], "max_gen_toks": 64},
        "metric_list": [{"metric": "exact_match"}],
    }
    (folder / "concilium_arith.yaml").write_text(json.dumps(task))  # JSON is YAML


async def test_lm_eval_scores_a_served_workflow_two_shot_multiturn(
    api: ManagedProcess, tmp_path: Path
) -> None:
    write_task(tmp_path)
    args = f"model=arith,base_url={api.url}/chat/completions,tokenizer_backend=None,num_concurrent=2,max_retries=1"
    argv = [str(LM_EVAL), "--model", "local-chat-completions",
            "--model_args", args, "--tasks", "concilium_arith", "--include_path", str(tmp_path),
            "--num_fewshot", "2", "--apply_chat_template", "--fewshot_as_multiturn",
            "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=tmp_path,
        env=offline,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    (samples,) = (tmp_path / "out").rglob("samples_concilium_arith_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        (sent,) = row["arguments"]["gen_args_0"]["arg_0"]
        conversation = json.loads(sent)  # the chat lm-eval sent, as it logged it
        assert [m["role"] for m in conversation] == ["user", "assistant"] * 2 + ["user"]
        assert conversation[-1]["content"] == row["doc"]["question"]  # the shots come first
        assert row["resps"] == [[row["target"]]]  # the workflow's voted answer, bare
    score = json.loads(results.read_text())["results"]["concilium_arith"]["exact_match,none"]
    assert score == 1.0
