"""Every example workflow validates and runs on the simulated server from the CLI, in
both output modes: ``--json`` (parsed, with the pattern's details) and the human text
(every agent of the transcript, the votes, every detail and the answer line; the live
status line is drawn from the run's events). No mode may end in a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from concilium.cli import main
from concilium.cli._progress import Progress

ROOT = Path(__file__).resolve().parents[2]
LONG_TEXT = (
    " ".join(f"Fact {i} about the lighthouse is recorded here." for i in range(20))
    + "\nQuestion: when was it built?"
)
QUESTION = (
    "How tall is the Halvik lighthouse, when was it built, and how many years before 2024 was that?"
)
INPUTS = {
    "plan_and_execute": QUESTION,
    "react": QUESTION,
    "chain_of_agents": LONG_TEXT,
    "tree_of_thoughts": "Use 4 6 10 2 to make 24.",
    "skeleton_of_thought": "Why take the bus?",
}
# what the built-in patterns must report in details (a new example needs no entry here:
# adding a pattern touches its module, templates, example, test and the README only)
DETAILS = {
    "debate": "per_round", "self_consistency": "samples", "nested": "per_round", "round_table": "per_round",
    "mixture_of_agents": "layers", "sparse_mixture": "layers", "manager_worker": "assignments",
    "chain_of_agents": "chunks", "best_of_n": "candidates", "knockout": "bracket",
    "universal_self_consistency": "chosen", "adaptive_consistency": "samples_used",
    "confidence_consistency": "confidences", "synthesis": "explorer_votes", "skeleton_of_thought": "points",
    "tree_of_thoughts": "steps", "plan_and_execute": "rounds", "react": "steps",
}  # fmt: skip
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.yaml"))


def cli(*args: str) -> Result:
    """The CLI in this process (click's runner): exit code, stdout and stderr apart."""
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def _ok(result: Result) -> None:
    detail = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI raised {result.exception!r}\n{detail}") from result.exception
    assert result.exit_code == 0, detail
    assert "Traceback" not in result.stdout + result.stderr, detail


def _run(name: str, *extra: str) -> Result:
    path = str(ROOT / "examples" / f"{name}.yaml")
    return cli(
        "run", path, "--backend", "sim", "--input", INPUTS.get(name, "What is 12 * 7?"), *extra
    )


def test_every_listed_example_exists() -> None:
    assert set(DETAILS) <= set(EXAMPLES), sorted(set(DETAILS) - set(EXAMPLES))


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_validates_and_runs_on_the_simulated_server(name: str) -> None:
    _ok(cli("validate", str(ROOT / "examples" / f"{name}.yaml")))
    out = _run(name, "--json")
    _ok(out)
    result = json.loads(out.stdout)
    assert result["answer"] and result["calls"] >= 1
    if name in DETAILS:
        assert DETAILS[name] in result["details"], sorted(result["details"])
    assert result["transcript"] and all(turn["agent"] for turn in result["transcript"])


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_prints_a_readable_result(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The human output: every agent, the votes, the details, the answer, the costs; and
    the live status line (forced on, as on a terminal) follows every call to its end."""
    drawn: list[Progress] = []

    def on_terminal(cls: type[Progress], stream: Any) -> Progress:
        drawn.append(cls(io.StringIO()))
        return drawn[-1]

    monkeypatch.setattr(Progress, "for_terminal", classmethod(on_terminal))
    expected = json.loads(_run(name, "--json").stdout)  # the same seed: the same run
    out = _run(name)
    _ok(out)
    text = out.stdout
    lines = text.splitlines()
    assert "simulated server" in lines[0]
    for turn in expected["transcript"]:
        assert any(line.startswith(f"  {turn['agent']}") for line in lines), (turn["agent"], text)
    assert sum(line.startswith("== ") for line in lines) >= 1
    if expected["votes"]:
        assert any(line.startswith("votes: ") for line in lines), text
    for key in expected["details"]:
        assert f"\n  {key}: " in text, (key, text)
    answer = expected["answer"].splitlines()
    if len(answer) == 1:
        assert f"answer: {answer[0]}" in lines, text
    else:
        assert lines.index("answer:") < lines.index(f"  {answer[-1]}"), text
    assert lines[-1].startswith(f"calls: {expected['calls']}, tokens: "), text
    progress = drawn[-1]
    assert progress.done >= 1 and not any(progress.running.values()), progress.running
    assert f"calls done: {progress.done}" in progress.line()
