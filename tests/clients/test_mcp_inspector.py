"""Third-party MCP software against concilium, over stdio.

- The MCP Inspector's CLI (its own process, its default 15 s connect timeout) lists
  and calls the tool of ``concilium serve mcp examples/debate.yaml --backend sim``.
- tests/clients/get_sum.yaml has ReAct call ``get-sum`` on ``server-everything``
  (the reference MCP server); the simulated server (a test double) writes the call
  and answers with the sum only once the tool's observation holds it.

Both packages are npm packages, pinned in the Makefile and installed by ``make
mcp-clients`` under ~/.cache/concilium/npm. Where they are absent the tests are
skipped, unless CONCILIUM_REQUIRE_NPM=1 (set by ``make test``, so CI cannot pass by
skipping them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

NPM_HOME = Path.home() / ".cache" / "concilium" / "npm"
INSPECTOR = NPM_HOME / "node_modules" / ".bin" / "mcp-inspector"
EVERYTHING = NPM_HOME / "node_modules" / "@modelcontextprotocol" / "server-everything"
ROOT = Path(__file__).resolve().parents[2]
DEBATE = ROOT / "examples" / "debate.yaml"
GET_SUM = Path(__file__).with_name("get_sum.yaml")
QUESTION = "What is 12 * 7?"
CONCILIUM = [sys.executable, "-P", "-m", "concilium"]


@pytest.fixture(autouse=True)
def npm_packages() -> None:
    missing = [str(path) for path in (INSPECTOR, EVERYTHING) if not path.exists()]
    if missing:
        message = f"the MCP client tests need {', '.join(missing)} (make mcp-clients)"
        if os.environ.get("CONCILIUM_REQUIRE_NPM") == "1":
            pytest.fail(message + " (CONCILIUM_REQUIRE_NPM=1)")
        pytest.skip(message)


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to the end (the timeout only ends a hang) and return its stdout."""
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def inspector(tmp_path: Path, *method: str) -> dict[str, Any]:
    """The Inspector CLI with its defaults, spawning ``serve mcp`` over stdio."""
    catalog = {"MCP_CATALOG_PATH": str(tmp_path / "mcp.json")}  # not the user's ~/.mcp-inspector
    argv = ["node", str(INSPECTOR), "--cli",
            *CONCILIUM, "serve", "mcp", str(DEBATE), "--backend", "sim", *method]  # fmt: skip
    return json.loads(run(argv, tmp_path, catalog))


def test_the_mcp_inspector_cli_lists_and_calls_a_served_workflow(tmp_path: Path) -> None:
    listed = inspector(tmp_path, "--method", "tools/list")
    (tool,) = listed["tools"]
    assert tool["name"] == "debate"
    assert tool["inputSchema"]["required"] == ["question"]

    called = inspector(tmp_path, "--method", "tools/call", "--tool-name", "debate",
                       "--tool-arg", f"question={QUESTION}")  # fmt: skip
    ran = json.loads(run([*CONCILIUM, "run", str(DEBATE), "--backend", "sim",
                          "--input", QUESTION, "--json"], tmp_path))  # fmt: skip
    assert called["isError"] is False
    assert called["content"] == [{"type": "text", "text": ran["answer"]}]
    assert called["structuredContent"]["answer"] == ran["answer"]
    assert called["structuredContent"]["calls"] == ran["calls"] == 6  # 3 solvers, 2 rounds


def test_a_workflow_calls_get_sum_on_server_everything(tmp_path: Path) -> None:
    assert "ok:" in run([*CONCILIUM, "validate", str(GET_SUM)], tmp_path)
    ran = json.loads(run([*CONCILIUM, "run", str(GET_SUM), "--backend", "sim",
                          "--input", "What is 1234 + 4321?", "--json"], tmp_path))  # fmt: skip
    assert ran["error"] is None
    assert ran["details"]["steps"] == [
        {"step": 0, "tool": "get-sum", "observation": "The sum of 1234 and 4321 is 5555.",
         "seconds": ran["details"]["steps"][0]["seconds"]}
    ]  # fmt: skip
    assert ran["tool_calls"] == 1
    assert ran["answer"] == "[simulated reply] 5555"
