"""The research assistant served by ``concilium serve api`` (a subprocess on the
simulated server), streamed to the official ``openai`` client: each researcher's
steps arrive as reasoning deltas while it runs, then the cited report."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import openai

from concilium.serving import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What do we know about Tessary Labs?"


async def test_the_research_workflow_streams_which_researcher_does_what(tmp_path: Path) -> None:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api",
            str(ROOT / "examples" / "research_assistant.yaml"), "--backend", "sim", "--port", "0"]  # fmt: skip
    proc = ManagedProcess(
        "concilium serve api",
        argv,
        ready_pattern=r"at (?P<url>http://\S+/v1)",
        health_url="{url}/health",
        deadline=60,
        env={"HOME": str(tmp_path)},
    )  # fmt: skip  (the index under ~/.cache)
    await proc.start()
    try:
        assert proc.url is not None
        client = openai.AsyncOpenAI(base_url=proc.url, api_key="unused", max_retries=0)
        reasoning: list[str] = []
        content: list[str] = []
        stream = await client.chat.completions.create(
            model="research_assistant",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
        )
        async for chunk in stream:
            delta = chunk.choices[0].delta
            thought = (delta.model_extra or {}).get("reasoning_content")
            if thought:
                assert not content, "progress after the report"
                reasoning.append(thought)
            if delta.content:
                content.append(delta.content)
    finally:
        await proc.stop()
    lines = [line for r in reasoning for line in r.splitlines()]
    steps = [(m[1], m[2]) for line in lines if (m := re.match(r"\[researcher (\d)\] (\w+)", line))]
    for who in "123":
        mine = [what for w, what in steps if w == who]
        assert mine[0] == "researching" and mine[-1].isdigit()  # "2 claims from ..." ends it
        assert "search" in mine and "read" in mine and mine.index("search") < mine.index("read")
    started = [i for i, (_, what) in enumerate(steps) if what == "researching"]
    finished = [i for i, (_, what) in enumerate(steps) if what.isdigit()]
    assert max(started) < min(finished)  # all three were at work at once
    assert any(line.startswith("[researcher 1] search 'Tessary Labs'") for line in lines)
    assert any(line.startswith("[reconcile] Sources disagree") for line in lines)
    assert any(line.startswith("[writer] writing the section on") for line in lines)
    report = "".join(content)
    assert report.startswith(f"# {QUESTION}") and "## Sources" in report
    assert "Sources disagree:" in report and "[1]" in report
