"""OTLP export: a real `concilium run` sends its GenAI spans to an OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from otlp_receiver import Receiver, attrs

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`concilium run` in its own process: a fresh tracer provider, flushed at exit."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = [sys.executable, "-P", "-m", "concilium", "run", "examples/debate.yaml", "-b", "sim"]
    return subprocess.run(
        [*command, "-i", "What is 2 + 3?", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check_genai_tree(got: Receiver) -> None:
    assert got.paths and set(got.paths) == {"/v1/traces"}
    by_id = {span.span_id: span for span in got.spans}
    names = [span.name for span in got.spans]
    (workflow,) = [s for s in got.spans if s.name.startswith("invoke_workflow ")]
    chats = [s for s in got.spans if s.name.startswith("chat ")]
    assert chats, names
    assert not workflow.parent_span_id  # the root
    for chat in chats:
        values = attrs(chat)
        assert values["gen_ai.operation.name"] == "chat"
        assert chat.name == f"chat {values['gen_ai.request.model']}"
        assert values["gen_ai.usage.input_tokens"] > 0
        assert values["gen_ai.usage.output_tokens"] > 0
        # every chat hangs, through its ancestors, under the workflow span of the same trace
        assert chat.trace_id == workflow.trace_id
        node = chat
        while node.parent_span_id:
            node = by_id[node.parent_span_id]
        assert node.span_id == workflow.span_id
    assert attrs(workflow)["gen_ai.operation.name"] == "invoke_workflow"


def test_spans_reach_the_collector_named_by_the_flag(receiver: Receiver) -> None:
    done = _run(["--otlp-endpoint", receiver.url], {})
    assert done.returncode == 0, done.stderr
    _check_genai_tree(receiver)  # the CLI flushed before it exited


def test_spans_reach_the_collector_named_by_the_environment(receiver: Receiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=concilium",
    }
    done = _run([], env)
    assert done.returncode == 0, done.stderr
    _check_genai_tree(receiver)
    assert all(h.get("x-team") == "concilium" for h in receiver.headers)


def test_a_bad_endpoint_is_a_user_error_with_the_credential_masked() -> None:
    done = _run(["--otlp-endpoint", "ftp://user:s3cret@example.invalid"], {})
    assert done.returncode == 2, done.stderr
    assert "s3cret" not in done.stderr
    assert "http://127.0.0.1:4318" in done.stderr
