"""Every command traces: `eval`, `serve mcp`, `ui` and `research`, each run as its own
process on the simulated server, send GenAI spans to an OTLP/HTTP receiver on loopback
(named by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), with the conventions' attribute
names: the workflow's name in `gen_ai.workflow.name` (and `gen_ai.agent.name`), the
model server's host in `server.address` and its port in `server.port`. (`eval --ray`:
tests/evals/test_ray.py, on that module's Ray instance.)"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from otlp_receiver import Receiver, attrs, named

ROOT = Path(__file__).resolve().parents[2]
DEBATE = "examples/debate.yaml"
CLI = [sys.executable, "-P", "-m", "concilium"]


def check_genai_names(spans: list[Any], *workflows: str) -> None:
    """The workflow spans name their workflow as the conventions do; every chat span
    names its server by host and port, not by URL."""
    runs = named(spans, "invoke_workflow ")
    assert {s.name for s in runs} == {f"invoke_workflow {w}" for w in workflows}
    for span in runs:
        a = attrs(span)
        assert a["gen_ai.operation.name"] == "invoke_workflow"
        assert span.name == f"invoke_workflow {a['gen_ai.workflow.name']}"
        assert a["gen_ai.agent.name"] == a["gen_ai.workflow.name"]
    chats = named(spans, "chat ")
    assert chats
    for chat in chats:
        a = attrs(chat)
        assert a["server.address"] == "127.0.0.1", a  # a host name, not http://...:PORT/v1
        assert isinstance(a["server.port"], int) and a["server.port"] > 0, a
        # every chat hangs under a workflow span of its own trace
        assert chat.trace_id in {w.trace_id for w in runs}


def test_eval_sends_one_trace_per_run_linked_to_the_eval_span(
    receiver: Receiver, tmp_path: Path
) -> None:
    data = tmp_path / "sums.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)} for i in (1, 2)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [*CLI, "eval", str(data), DEBATE, "examples/self_consistency.yaml", "-b", "sim"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        cwd=ROOT, env=receiver.env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = receiver.snapshot()  # the CLI flushed before it exited

    (root,) = named(spans, "eval ")
    assert root.name == "eval sums.jsonl" and not root.parent_span_id
    assert attrs(root)["concilium.eval.methods"] == ["debate", "self_consistency"]
    items = named(spans, "eval_item ")
    runs = {(attrs(s)["concilium.eval.item.id"], attrs(s)["concilium.eval.method"]) for s in items}
    assert runs == {(i, m) for i in ("q1", "q2") for m in ("debate", "self_consistency")}
    assert len(items) == 4
    # each run is a trace of its own, whose root links to the eval's span
    assert len({s.trace_id for s in items} | {root.trace_id}) == 5
    for item in items:
        assert not item.parent_span_id
        (link,) = item.links
        assert (link.trace_id, link.span_id) == (root.trace_id, root.span_id)
        (workflow,) = [s for s in spans if s.parent_span_id == item.span_id]
        assert workflow.trace_id == item.trace_id
        assert workflow.name == f"invoke_workflow {attrs(item)['concilium.eval.method']}"
    check_genai_names(spans, "debate", "self_consistency")


def test_research_sends_its_spans(receiver: Receiver) -> None:
    command = [*CLI, "research", "examples/research_corpus", "Who founded Tessary Labs?"]
    done = subprocess.run(
        [*command, "-b", "sim", "--json"],
        cwd=ROOT, env=receiver.env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = receiver.snapshot()
    check_genai_names(spans, "research_assistant")
    assert named(spans, "execute_tool ")  # the documents tools, inside the same trace


def test_serve_mcp_over_stdio_sends_the_tool_calls_spans(receiver: Receiver) -> None:
    from mcp import Client, StdioServerParameters

    async def call() -> None:
        params = StdioServerParameters(
            command=CLI[0], args=[*CLI[1:], "serve", "mcp", DEBATE, "--backend", "sim"],
            cwd=str(ROOT), env=receiver.env(),
        )  # fmt: skip
        async with Client(params, read_timeout_seconds=120) as client:
            result = await client.call_tool("debate", {"question": "What is 17+25?"})
            assert not result.is_error
            # the server goes on serving: its spans arrive while it runs
            await asyncio.to_thread(receiver.wait_for, lambda s: bool(named(s, "invoke_workflow")))

    asyncio.run(call())
    spans = receiver.snapshot()
    check_genai_names(spans, "debate")
    # the MCP SDK's server span of the tool call is the workflow span's parent
    (workflow,) = named(spans, "invoke_workflow ")
    (tool_call,) = [s for s in spans if s.span_id == workflow.parent_span_id]
    assert tool_call.name == "tools/call debate"


def test_ui_sends_the_spans_of_the_runs_it_starts(receiver: Receiver, tmp_path: Path) -> None:
    import httpx

    command = [*CLI, "ui", "-b", "sim", "--port", "0", "--workflows", DEBATE]
    proc = subprocess.Popen(
        [*command, "--state", str(tmp_path / "ui.db")],
        cwd=ROOT, env=receiver.env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not (
            found := re.search(r"concilium ui at (http://127\.0\.0\.1:\d+)", "".join(lines))
        ):
            line = proc.stderr.readline()
            assert line, f"ui exited early: {''.join(lines)}"
            lines.append(line)
        url = found.group(1)
        reply = httpx.post(f"{url}/runs", data={"workflow": "debate", "question": "What is 2+2?"})
        assert reply.status_code == 303, reply.text
        # a span is exported after its children (they end first)
        spans = receiver.wait_for(lambda s: bool(named(s, "invoke_workflow")))
        check_genai_names(spans, "debate")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
