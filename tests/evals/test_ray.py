"""concilium eval --ray: a pool of workers on a local Ray instance gives a local run's
results, also when a worker is killed mid-eval."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import Receiver, attrs, named

from concilium.agents.sim import Latency, Rule, SimConfig, Statistical
from concilium.app import Backend
from concilium.evals import (
    EvalRecord,
    ItemResult,
    build_methods,
    evaluate,
    evaluate_on_ray,
    parse_setting,
    summarise,
)
from concilium.serving import SimServer

ray = pytest.importorskip("ray")

WORKFLOWS = Path(__file__).parent / "workflows"
FILES = [WORKFLOWS / "single.yaml", WORKFLOWS / "sc.yaml"]
RECORDS = [EvalRecord(id=f"q{i}", question=f"What is {i} + {i} * 3?", answer=str(4 * i)) for i in range(1, 11)]  # fmt: skip
# answers fixed by the question, not by arrival order: odd items wrong, the rest right
CONFIG = SimConfig(
    latency=Latency(fixed=0.0),
    rules=[Rule(match=r"What is [13579] \+", replies=["\\boxed{-1}"])],
    statistical=Statistical(accuracy=1.0),
)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray instance (2 CPUs, loopback) for the module: it takes seconds to start."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("ray"))  # workers put the driver's folder on sys.path
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def _stable(rows: list[ItemResult]) -> list[tuple[str, ...]]:
    """What a run gives whatever the order, timing or resumes (a resumed run replays
    some of its calls: calls + replayed is what it made)."""
    keys = ("id", "method", "answer", "gold", "correct", "failed", "samples")
    return sorted(
        (*(json.dumps(r[k]) for k in keys), str(r["calls"] + r["replayed"])) for r in rows
    )


def _lines(out: Path) -> list[ItemResult]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _summary(rows: list[ItemResult], names: list[str]) -> list[dict[str, object]]:
    gold = {r.id: r.answer for r in RECORDS}

    def scorer_of(row: ItemResult) -> Callable[[str | None], bool]:
        return lambda answer: answer == gold[row["id"]]

    table = summarise(rows, names, scorer_of)
    return [{k: v for k, v in m.items() if "wall" not in k} for m in table]


def test_the_pool_gives_the_local_run(local_ray: None, tmp_path: Path) -> None:
    sweep = [parse_setting("workflow.samples=1,3")]
    swept: list[int] = []
    streamed: list[ItemResult] = []

    async def both() -> tuple[list[ItemResult], list[ItemResult]]:
        async with SimServer(CONFIG, process=True) as sim:
            backend = Backend.parse(sim.url)
            local = await evaluate(RECORDS, build_methods(FILES), backend, tmp_path / "local")
            pooled = await asyncio.to_thread(
                evaluate_on_ray, RECORDS, FILES, [], backend, tmp_path / "ray", shards=2,
                on_result=streamed.append,
            )  # fmt: skip
            await sim.reset()
            # a sweep on the workers runs the swept values, counted at the server
            await asyncio.to_thread(
                evaluate_on_ray, RECORDS[:3], FILES[1:], sweep, backend, tmp_path / "sweep"
            )
            swept.extend(r["body"].get("n", 1) for r in await sim.requests())
        return local, pooled

    local, pooled = asyncio.run(both())
    assert sorted(swept) == [1, 1, 1, 3, 3, 3]
    assert [(r["method"], r["id"]) for r in pooled] == [(r["method"], r["id"]) for r in local]
    assert _stable(pooled) == _stable(local)
    assert {r["correct"] for r in local} == {True, False}  # the comparison can tell
    # each row reached results.jsonl as it finished, in the order it was streamed
    assert _lines(tmp_path / "ray") == streamed and _stable(streamed) == _stable(local)
    names = [m.name for m in build_methods(FILES)]
    assert _summary(pooled, names) == _summary(local, names)


def _run_of(call: str) -> tuple[str, str]:
    """(method, item id) of a call: the agent says the method, the question the item."""
    agent, body = json.loads(call)
    method = "single" if agent == "solver" else "debate"
    first = next(m["content"] for m in body["messages"] if m["role"] == "user")
    found = re.search(r"What is (\d+) \+", first)
    assert found is not None, first
    return method, f"q{found[1]}"


def _calls(log: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps([r["agent"], r["body"]], sort_keys=True) for r in log)


def test_a_killed_worker_loses_only_its_calls_in_flight(local_ray: None, tmp_path: Path) -> None:
    files = [WORKFLOWS / "single.yaml", WORKFLOWS / "debate.yaml"]  # debate: rounds of calls
    config = CONFIG.model_copy(update={"latency": Latency(fixed=0.05)})  # calls in flight
    kill_at, rows_seen, finished_at_kill = 6, [], set[tuple[str, str]]()

    def kill_a_worker(row: ItemResult) -> None:
        rows_seen.append(row)
        if len(rows_seen) == kill_at:
            finished_at_kill.update((r["method"], r["id"]) for r in rows_seen)
            workers = sorted(n for n in ray.util.list_named_actors() if n.startswith("concilium-eval-"))  # fmt: skip
            assert len(workers) == 2
            ray.kill(ray.get_actor(workers[0]))

    async def both() -> tuple[list[ItemResult], list[ItemResult], list[Any], list[Any]]:
        async with SimServer(config, process=True) as sim:
            backend = Backend.parse(sim.url)
            methods = build_methods(files)
            local = await evaluate(RECORDS, methods, backend, tmp_path / "local", concurrency=4)
            local_log = await sim.requests()
            await sim.reset()
            pooled = await asyncio.to_thread(
                evaluate_on_ray, RECORDS, files, [], backend, tmp_path / "ray", concurrency=4,
                shards=2, on_result=kill_a_worker,
            )  # fmt: skip
            return local, pooled, local_log, await sim.requests()

    local, pooled, local_log, pooled_log = asyncio.run(both())
    runs = len(RECORDS) * len(files)
    assert kill_at < len(rows_seen) == runs  # killed mid-eval, and the eval went on
    # nothing lost, nothing twice, the local run's results
    assert [(r["method"], r["id"]) for r in pooled] == [(r["method"], r["id"]) for r in local]
    lines = _lines(tmp_path / "ray")
    assert len(lines) == len({(r["method"], r["id"]) for r in lines}) == runs
    assert _stable(pooled) == _stable(lines) == _stable(local)
    # at the server: every call of the local run was made; the only calls made twice are
    # the killed worker's calls in flight, each once more, of runs unfinished at the kill
    once = _calls(local_log)
    assert set(once.values()) == {1}  # each call is told apart by its agent and body
    sent = _calls(pooled_log)
    assert not once - sent
    again = sent - once
    assert set(again.values()) <= {1}
    assert len(pooled_log) == len(local_log) + len(again)
    assert not {_run_of(call) for call in again} & finished_at_kill
    assert len(again) <= 4 * 3  # at most every run in flight (4), each a debate round (3 calls)


def test_ray_refuses_a_server_per_process(tmp_path: Path) -> None:
    from concilium._errors import UserError

    with pytest.raises(UserError, match="its own server"):
        evaluate_on_ray(RECORDS, FILES, [], Backend.parse("sim"), tmp_path)


def test_eval_on_ray_workers_send_their_runs_to_the_collector_linked_to_the_eval_span(
    local_ray: None, receiver: Receiver, tmp_path: Path
) -> None:
    """``concilium eval --ray`` (a process of its own, on this module's Ray instance)
    with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: the driver sends its ``eval`` span, each
    worker its runs, every run an ``eval_item`` trace linked to that span."""
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"id": r.id, "question": r.question, "answer": r.answer}) + "\n" for r in RECORDS[:2]))  # fmt: skip
    address = ray.get_runtime_context().gcs_address

    async def eval_on_ray() -> tuple[int | None, bytes]:
        async with SimServer(CONFIG, process=True) as sim:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "concilium", "eval", str(data), *map(str, FILES),
                "--backend", sim.url, "--ray", address, "--out", str(tmp_path / "out"),
                "--concurrency", "1",  # one worker: each one is a process to start
                cwd=tmp_path, env=receiver.env(), stderr=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            _, err = await proc.communicate()
            return proc.returncode, err

    code, err = asyncio.run(eval_on_ray())
    assert code == 0, err.decode()[-3000:]
    spans = receiver.snapshot()  # the driver and every worker flushed before the CLI exited
    (root,) = named(spans, "eval ")  # the driver's
    assert root.name == "eval sums.jsonl" and not root.parent_span_id
    assert attrs(root)["concilium.eval.methods"] == ["single", "self_consistency"]
    items = named(spans, "eval_item ")  # the workers'
    runs = sorted((attrs(s)["concilium.eval.method"], attrs(s)["concilium.eval.item.id"]) for s in items)  # fmt: skip
    assert runs == sorted((m, r.id) for m in ("single", "self_consistency") for r in RECORDS[:2])
    assert len({s.trace_id for s in items} | {root.trace_id}) == 5  # a trace per run
    for item in items:
        assert not item.parent_span_id
        (link,) = item.links
        assert (link.trace_id, link.span_id) == (root.trace_id, root.span_id)
        (workflow,) = [s for s in spans if s.parent_span_id == item.span_id]
        assert workflow.name == f"invoke_workflow {attrs(item)['concilium.eval.method']}"
        assert [s for s in named(spans, "chat ") if s.trace_id == item.trace_id]  # its calls
    # where the calls went: the driver read the server before and after (nobody else used it)
    servers = json.loads((tmp_path / "out" / "summary.json").read_text())["servers"]
    calls = sum(r["calls"] for r in _lines(tmp_path / "out"))
    (server,) = servers["servers"]  # the --backend URL
    assert servers["total"]["requests"] == server["requests"] == calls > 0
