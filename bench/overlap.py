"""``concilium bench overlap``: overlapped tool calls (AsyncLM-style, the
``overlapped_tools`` pattern) against run-then-resume, side by side in one run on
the simulated server (a test double) streaming at a scripted latency per token,
with a tool of fixed latency.

The same task runs ``tasks`` times in each mode, the modes alternating:

* overlapped -- ``overlapped_tools``: the model writes ``[CALL] c1 [HEAD]
  lookup("lighthouse") [END]`` and keeps decoding (``filler`` tokens) while the tool
  runs; the result goes back in the next round, which answers;
* run-then-resume -- a graph on the same public kit (``ask``, ``turn``, and the
  pattern's ``parse_calls`` and ``run_call``, which call the tool with ``use_tool``):
  the request stops at the call's ``[END]`` (``stop``), the tool runs, then
  generation resumes with the result and decodes the same ``filler`` tokens before
  the answer.

Both modes decode the same words and call the tool once; only when the tool runs
differs. Reported per mode: wall time per task (median), tool calls, and the
overlap fraction (the tool's time spent while the stream that issued it was still
open, over the tool's time); and the ratio run-then-resume / overlapped. The
replies are scripted, so the figures measure the scheduling, not a model.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from typing import Any, TypedDict

from concilium.agents import Agent, aclose
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.bench._report import emit
from concilium.graphs import END, START, Event, Graph, RunContext, run
from concilium.graphs.kit import PatternOptions, Turn, ask, turn, user
from concilium.graphs.patterns import overlapped_tools, parse_calls, run_call
from concilium.serving import SimServer
from concilium.tools import ToolRegistry

BACKEND = "simulated server (a test double; scripted replies streamed word by word)"
CALL = '[CALL] c1 [HEAD] lookup("lighthouse") [END]'
TRAP = "[TRAP][END]"
ANSWER = "\\boxed{1874}"
RESULT = r"\[INTR\] c1 \[HEAD\] lighthouse: built in 1874"
MODES = ("overlapped", "run_then_resume")


class Task(TypedDict):
    """One task's run in one mode; times in seconds from the run's start."""

    mode: str
    wall_s: float
    tool_calls: int
    tool_started_s: float
    tool_ended_s: float
    stream_ended_s: float
    """When the stream that issued the call ended (its round's turn)."""
    overlap: float
    answer: str | None
    text: str
    """The words the model decoded over all rounds, the wait marker left out."""


def filler(tokens: int) -> str:
    """What the model writes after its call (the work overlap can hide the tool under)."""
    return " ".join(f"note{i}" for i in range(tokens))


def run_then_resume(
    agent: Agent, tools: ToolRegistry, *, max_rounds: int = 4, answer: str = "boxed"
) -> Graph:
    """The baseline: each request stops at a call's ``[END]``, the tool runs, then
    the model resumes with the ``[INTR]`` result (the ``overlapped_tools`` frames).

    Example:
        >>> from concilium.agents import FakeModel
        >>> from concilium.graphs import run_sync
        >>> from concilium.tools import builtin_tools
        >>> fake = FakeModel({"a": ['[CALL] c1 [HEAD] calculator("6*7") [END]', "\\\\boxed{42}"]})
        >>> result = run_sync(run_then_resume(Agent("a", fake.spec()), builtin_tools()), "6*7?")
        >>> result.answer, result.details["rounds"]
        ('42', 2)
    """
    opts = PatternOptions(answer, None, "run_then_resume")
    listed = [{"name": n, "description": tools.get(n).description} for n in tools.names()]

    async def solve(state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt = opts.lib.render(
            "overlapped_tools/solve",
            question=state["question"],
            tools=listed,
            answer_format=opts.fmt.instruction,
        )
        messages: list[dict[str, Any]] = user(prompt)
        transcript: list[Turn] = []
        text = ""
        for rnd in range(1, max_rounds + 1):
            reply = await ask(ctx, agent, messages, f"r{rnd}", on_text=lambda _: None, stop=["[END]"])  # fmt: skip
            text = reply.text.rstrip()
            if "[CALL]" in text.rsplit("[END]", 1)[-1]:  # the server cut the stop string off
                text += " [END]"
            frames = parse_calls(text)
            said = None if frames else opts.fmt.extract(text)
            transcript.append(turn(ctx, reply, text=text, answer=said, prompt=prompt, round=rnd))
            if not frames:
                break
            results: list[str] = []
            for frame in frames:  # one at a time, each after the stream that wrote it
                results.append(await run_call(ctx, tools, frame, f"r{rnd}/{frame.id}", agent=agent.name))  # fmt: skip
            prompt = opts.lib.render("overlapped_tools/results", frames="\n".join(results))
            messages = [*messages, {"role": "assistant", "content": text}, *user(prompt)]
        return {"answer": opts.fmt.extract(text), "text": text, "transcript": transcript,
                "details": {"rounds": len(transcript)}}  # fmt: skip

    graph = Graph(opts.name)
    graph.add_node("stream", solve, writes=["answer", "text", "transcript", "details"])
    graph.add_edge(START, "stream")
    graph.add_edge("stream", END)
    return graph


def _rules(tokens: int) -> list[Rule]:
    after = filler(tokens)
    return [
        Rule(agent="overlapped", match=RESULT, replies=[ANSWER]),
        Rule(agent="overlapped", replies=[f"{CALL} {after} {TRAP}"]),
        Rule(agent="run_then_resume", match=RESULT, replies=[f"{after} {ANSWER}"]),
        Rule(agent="run_then_resume", replies=[CALL]),
    ]


async def _task(mode: str, sim: SimServer, tool_latency: float) -> Task:
    marks: dict[str, float] = {}
    ends: dict[int, float] = {}
    registry = ToolRegistry()

    @registry.tool
    async def lookup(topic: str) -> str:
        """Look a topic up (sleeps for the tool's fixed latency)."""
        marks["tool_started"] = time.perf_counter()
        await asyncio.sleep(tool_latency)
        marks["tool_ended"] = time.perf_counter()
        return f"{topic}: built in 1874"

    def on_event(event: Event) -> None:
        if event["type"] == "turn" and "round" in event:
            ends.setdefault(event["round"], time.perf_counter())

    agent = Agent(mode, sim.spec())
    graph = (overlapped_tools if mode == "overlapped" else run_then_resume)(agent, registry)
    started = time.perf_counter()
    result = await run(graph, "When was the lighthouse built?", on_event=on_event)
    wall = time.perf_counter() - started
    tool_s = marks["tool_ended"] - marks["tool_started"]
    hidden = max(0.0, min(marks["tool_ended"], ends[1]) - marks["tool_started"])
    text = " ".join(t["text"].replace(TRAP, " ") for t in result.transcript)
    return {"mode": mode, "wall_s": round(wall, 4), "tool_calls": result.tool_calls,
            "tool_started_s": round(marks["tool_started"] - started, 4),
            "tool_ended_s": round(marks["tool_ended"] - started, 4),
            "stream_ended_s": round(ends[1] - started, 4),
            "overlap": round(hidden / tool_s, 3) if tool_s else 0.0,
            "answer": result.answer, "text": " ".join(text.split())}  # fmt: skip


async def _measure(tasks: int, tool_latency: float, per_token: float, tokens: int) -> list[Task]:
    config = SimConfig(rules=_rules(tokens), latency=Latency(ttft=0.02, per_token=per_token))
    done: list[Task] = []
    async with SimServer(config, process=True) as sim:
        for _ in range(tasks):
            for mode in MODES:  # alternating, so both modes share the machine's noise
                done.append(await _task(mode, sim, tool_latency))
        await aclose()
    return done


def main(
    *,
    tasks: int = 5,
    tool_latency: float = 0.3,
    per_token: float = 0.01,
    tokens: int = 40,
    json_file: str | None = None,
) -> dict[str, Any]:
    """Run both modes ``tasks`` times, print the table and the JSON line, return the figures."""
    done = asyncio.run(_measure(tasks, tool_latency, per_token, tokens))
    modes: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        rows = [t for t in done if t["mode"] == mode]
        modes[mode] = {"tasks": len(rows), "wall_s_median": round(statistics.median(t["wall_s"] for t in rows), 4),
                       "tool_calls": sum(t["tool_calls"] for t in rows),
                       "overlap_mean": round(statistics.mean(t["overlap"] for t in rows), 3)}  # fmt: skip
    ratio = modes["run_then_resume"]["wall_s_median"] / modes["overlapped"]["wall_s_median"]
    figures: dict[str, Any] = {
        "backend": BACKEND,
        "settings": {
            "tasks": tasks,
            "tool_latency_s": tool_latency,
            "per_token_s": per_token,
            "tokens_after_call": tokens,
            "ttft_s": 0.02,
        },
        "modes": modes,
        "ratio_resume_over_overlapped": round(ratio, 3),
        "tasks": done,
    }
    print(
        f"Overlapped tool calls vs run-then-resume on the {BACKEND}: a {tool_latency} s tool, "
        f"{per_token} s per token, {tokens} tokens decoded after the call; median of {tasks}"
    )
    print("| mode | wall s / task | tool calls | overlap (tool time hidden under decoding) |")
    print("| --- | --- | --- | --- |")
    for mode, f in modes.items():
        print(f"| {mode} | {f['wall_s_median']} | {f['tool_calls']} | {f['overlap_mean']:.0%} |")
    print(f"run-then-resume / overlapped: {figures['ratio_resume_over_overlapped']}x")
    emit(figures, json_file)
    return figures
