"""Every example workflow validates and runs on the simulated server from the CLI,
printing its answer and the pattern's details."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LONG_TEXT = " ".join(f"Fact {i} about the lighthouse is recorded here." for i in range(20)) + "\nQuestion: when was it built?"
QUESTION = "How tall is the Halvik lighthouse, when was it built, and how many years before 2024 was that?"
INPUTS = {"plan_and_execute": QUESTION, "react": QUESTION, "chain_of_agents": LONG_TEXT, "tree_of_thoughts": "Use 4 6 10 2 to make 24.", "skeleton_of_thought": "Why take the bus?"}
# what each pattern must report in details
DETAILS = {
    "debate": "per_round", "self_consistency": "samples", "nested": "per_round", "round_table": "per_round",
    "mixture_of_agents": "layers", "sparse_mixture": "layers", "manager_worker": "assignments",
    "chain_of_agents": "chunks", "best_of_n": "candidates", "knockout": "bracket",
    "universal_self_consistency": "chosen", "adaptive_consistency": "samples_used",
    "confidence_consistency": "confidences", "synthesis": "explorer_votes", "skeleton_of_thought": "points",
    "tree_of_thoughts": "steps", "plan_and_execute": "rounds", "react": "steps",
}  # fmt: skip
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.yaml"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "concilium", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_every_example_is_covered() -> None:
    assert sorted(DETAILS) == EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_validates_and_runs_on_the_simulated_server(name: str) -> None:
    path = f"examples/{name}.yaml"
    assert cli("validate", path).returncode == 0
    out = cli("run", path, "--backend", "sim", "--input", INPUTS.get(name, "What is 12 * 7?"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answer"] and result["calls"] >= 1
    assert DETAILS[name] in result["details"], sorted(result["details"])
