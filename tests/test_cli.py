"""The command line, run as a user runs it (a subprocess), exit codes included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "concilium", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize("example", ["debate", "self_consistency"])
def test_run_example_on_the_simulated_server_prints_json(example: str) -> None:
    out = cli(
        "run",
        f"examples/{example}.yaml",
        "--backend",
        "sim",
        "--input",
        "What is 12 * 7?",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"answer", "calls", "usage", "elapsed_s", "transcript"} <= set(result)
    assert set(result["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert result["calls"] == (6 if example == "debate" else 1)
    assert result["answer"] is not None
    assert all("[simulated reply]" in t["text"] for t in result["transcript"])


def test_run_prints_a_readable_transcript_and_writes_a_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    out = cli(
        "run", "examples/debate.yaml", "-b", "sim", "-i", "What is 2 + 3?", "--trace", str(trace)
    )
    assert out.returncode == 0, out.stderr
    assert "== round 1" in out.stdout and "== round 2" in out.stdout and "answer:" in out.stdout
    assert "simulated server" in out.stdout
    names = [json.loads(line)["name"] for line in trace.read_text().splitlines()]
    assert names.count("chat gemma-3-270m") == 6
    assert names.count("invoke_agent alice") == 2 and "invoke_workflow debate" in names


def test_validate_typo_gives_file_line_suggestion_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples/debate.yaml").read_text().replace("rounds: 2", "roundz: 2"))
    out = cli("validate", str(bad))
    assert out.returncode == 2
    assert f"{bad}:" in out.stderr and "Did you mean 'rounds'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_ok() -> None:
    out = cli("validate", "examples/debate.yaml")
    assert out.returncode == 0 and out.stdout.startswith("ok:")


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "examples/debate.yaml", "-i", "q", "--backend", "nope"], "is not a backend"),
        (["run", "missing.yaml", "-i", "q", "-b", "sim"], "no such file"),
        (["run", "examples/debate.yaml", "-i", "q", "--resume"], "--resume needs"),
        (["run", "examples/debate.yaml"], "Missing option"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(args: list[str], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_control_characters_in_an_error_message_are_printed_escaped(tmp_path: Path) -> None:
    # a path (or a server's body) quoted in an error must not recolour or retitle the terminal
    hostile = tmp_path / "w\x1b[2J\x1b]0;pwned\x07.yaml"
    out = cli("validate", str(hostile))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr
    assert "w\\x1b[2J\\x1b]0;pwned\\x07.yaml" in out.stderr and out.stderr.startswith("error: ")


def test_run_failure_exits_1(tmp_path: Path) -> None:
    out = cli("run", "examples/debate.yaml", "-b", "sim", "-i", "q", "--max-calls", "2")
    assert out.returncode == 1
    assert "budget exceeded" in out.stderr and "Traceback" not in out.stderr


def test_resume_from_state_file_replays_everything(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    args = ["run", "examples/debate.yaml", "-b", "sim", "-i", "What is 5 * 5?", "--json",
            "--state", str(state), "--run-id", "r"]  # fmt: skip
    first = json.loads(cli(*args).stdout)
    again = json.loads(cli(*args, "--resume").stdout)
    assert first["calls"] == 6
    assert again["answer"] == first["answer"] and again["transcript"] == first["transcript"]


def test_schema_and_graph() -> None:
    schema = json.loads(cli("schema").stdout)
    assert "workflow" in schema["properties"]
    mermaid = cli("graph", "examples/debate.yaml").stdout
    assert "speak" in mermaid and "vote" in mermaid


def test_the_json_result_counts_tool_calls() -> None:
    out = cli("run", "examples/plan_and_execute.yaml", "-b", "sim", "-i", "How old?", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # two searches in the first plan, the calculator in the replan
    assert (result["tool_calls"], result["tools_replayed"]) == (3, 0)


def test_max_tool_calls_on_the_command_line_stops_the_plan() -> None:
    out = cli(
        "run", "examples/plan_and_execute.yaml", "-b", "sim", "-i", "q", "--max-tool-calls", "1"
    )
    assert out.returncode == 1
    assert "budget exceeded: 1 tool_calls used, the limit is 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_max_tool_calls_in_the_workflow_files_budget(tmp_path: Path) -> None:
    text = (ROOT / "examples/react.yaml").read_text()
    shutil.copytree(ROOT / "examples/docs", tmp_path / "docs")  # inside the file's folder
    limited = tmp_path / "react.yaml"
    limited.write_text(text + "\nbudget:\n  max_tool_calls: 1\n")
    out = cli("run", str(limited), "-b", "sim", "-i", "q")
    assert out.returncode == 1
    assert "budget exceeded: 1 tool_calls used, the limit is 1" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "\nbudget:\n  max_tool_calls: 0\n")
    out = cli("validate", str(bad))
    assert out.returncode == 2 and "max_tool_calls" in out.stderr


def _alias_bomb(path: Path) -> Path:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")  # 10**9 values
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("command", [["serve", "sim"], ["serve", "vllm"]])
def test_a_server_config_file_with_an_alias_bomb_is_a_clear_error(
    tmp_path: Path, command: list[str]
) -> None:
    bomb = _alias_bomb(tmp_path / "bomb.yaml")
    out = cli(*command, "--config", str(bomb))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bomb}:" in out.stderr and "alias" in out.stderr


@pytest.mark.parametrize("command", [["serve", "sim"], ["serve", "vllm"]])
def test_a_server_config_that_is_a_fifo_or_a_device_is_refused_without_reading(
    tmp_path: Path, command: list[str]
) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # no writer: a plain open() would wait forever
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        out = cli(*command, "--config", str(path))
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"{path}: not a regular file ({kind})" in out.stderr


def test_a_cluster_config_file_still_loads(tmp_path: Path) -> None:
    from concilium.serving.cluster import load_cluster_spec

    path = tmp_path / "cluster.yaml"
    path.write_text("models:\n  - name: gemma\n    model: google/gemma-3-270m\ndeadline: 60\n")
    spec = load_cluster_spec(path)
    assert spec.deadline == 60 and spec.models[0].model == "google/gemma-3-270m"


def test_count_samples_makes_max_calls_count_each_sample() -> None:
    # the example's eight samples are one n=8 request: one call, or eight samples
    args = ("run", "examples/self_consistency.yaml", "-b", "sim", "-i", "q", "--max-calls", "4")
    plain = cli(*args, "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["calls"] == 1
    counted = cli(*args, "--count-samples")
    assert counted.returncode == 1 and "Traceback" not in counted.stderr
    assert "budget exceeded" in counted.stderr and "calls" in counted.stderr


def test_count_samples_in_the_workflow_files_budget(tmp_path: Path) -> None:
    text = (ROOT / "examples/self_consistency.yaml").read_text()
    path = tmp_path / "counted.yaml"
    path.write_text(text + "\nbudget: {max_calls: 4, count_samples: true}\n")
    out = cli("run", str(path), "-b", "sim", "-i", "q")
    assert out.returncode == 1 and "budget exceeded" in out.stderr
    path.write_text(text + "\nbudget: {max_calls: 8, count_samples: true}\n")
    out = cli("run", str(path), "-b", "sim", "-i", "q", "--json")
    assert out.returncode == 0, out.stderr
