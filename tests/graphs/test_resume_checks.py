"""Resume checks what it resumes (issue 11, item 5): a changed workflow or input is
refused unless forced, a run id that exists is not started again, another run id on
the same state file replays nothing, one run id runs once at a time (a killed run's
lock does not block its resume), and a damaged state file is a clean user error."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from concilium import BudgetExceeded, UserError
from concilium.agents import Agent, Budget
from concilium.graphs import run
from concilium.graphs.patterns import debate, self_consistency

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is 6 * 7?"


def team(sim: Any, names: tuple[str, ...] = ("ann", "bob")) -> list[Agent]:
    return [Agent(name, sim.spec(), max_tokens=32) for name in names]


async def test_an_edited_workflow_is_refused_and_a_forced_resume_runs(sim: Any, tmp_path) -> None:
    db = tmp_path / "run.db"
    with pytest.raises(BudgetExceeded):  # stopped in its second round
        await run(
            debate(team(sim), rounds=2), QUESTION, state_path=db, run_id="r1",
            budget=Budget(max_calls=3),
        )  # fmt: skip
    edits = {
        "rounds changed": debate(team(sim), rounds=3),
        "kind changed": self_consistency(team(sim)[0], samples=2),
        "agent renamed": debate(team(sim, ("ann", "carl")), rounds=2),
    }
    for what, graph in edits.items():
        with pytest.raises(UserError, match="the workflow") as caught:
            await run(graph, QUESTION, state_path=db, run_id="r1", resume=True)
        message = str(caught.value)
        assert "'r1'" in message and "changed" in message, what
        assert "--run-id" in message and "--resume --force" in message, what
        assert "the input" not in message, what
    forced = await run(
        debate(team(sim), rounds=3), QUESTION, state_path=db, run_id="r1", resume=True,
        force_resume=True,
    )  # fmt: skip
    assert forced.details["rounds"] == 3 and len(forced.transcript) == 6
    assert forced.calls + forced.replayed == 4  # rounds 2 and 3: round 1 was checkpointed
    # the forced resume recorded the new workflow: resuming it again needs no force
    again = await run(
        debate(team(sim), rounds=3), QUESTION, state_path=db, run_id="r1", resume=True
    )
    assert again.answer == forced.answer


async def test_a_changed_input_is_refused_and_an_existing_run_id_is_not_restarted(
    sim: Any, tmp_path
) -> None:
    db = tmp_path / "run.db"
    graph = debate(team(sim), rounds=2)
    await run(graph, QUESTION, state_path=db, run_id="r1")
    with pytest.raises(UserError, match="the input changed"):
        await run(graph, "What is 5 * 5?", state_path=db, run_id="r1", resume=True)
    with pytest.raises(UserError, match="already exists") as caught:
        await run(graph, QUESTION, state_path=db, run_id="r1")
    assert "--resume" in str(caught.value) and "--run-id" in str(caught.value)


async def test_a_new_run_id_on_an_old_state_file_replays_nothing(sim: Any, tmp_path) -> None:
    db = tmp_path / "run.db"
    graph = debate(team(sim), rounds=2)
    first = await run(graph, QUESTION, state_path=db, run_id="r1")
    other = await run(graph, QUESTION, state_path=db, run_id="r2")
    assert (other.calls, other.replayed) == (first.calls, 0)
    # each run still resumes its own calls
    resumed = await run(graph, QUESTION, state_path=db, run_id="r2", resume=True)
    assert resumed.calls == 0 and resumed.answer == other.answer


async def test_a_second_run_on_the_same_id_fails_fast_while_the_first_runs(
    sim: Any, tmp_path
) -> None:
    db = tmp_path / "run.db"
    graph = debate(team(sim), rounds=2)
    started = asyncio.Event()

    def on_event(event: Any) -> None:
        if event["type"] == "call_started":
            started.set()

    first = asyncio.create_task(run(graph, QUESTION, state_path=db, run_id="r1", on_event=on_event))
    await asyncio.wait_for(started.wait(), 30)
    with pytest.raises(UserError, match="in progress") as caught:
        await run(graph, QUESTION, state_path=db, run_id="r1", resume=True)
    assert f"process {os.getpid()}" in str(caught.value) and "--run-id" in str(caught.value)
    assert not first.done()  # it failed while the first was still running
    result = await first
    assert result.calls == 4
    # the lock went with the first run: another run id, or the same resumed, may go
    assert (await run(graph, QUESTION, state_path=db, run_id="r1", resume=True)).calls == 0
    assert not list(tmp_path.glob("*.lock"))


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1500])


def bad_json(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE concilium_calls SET response = '{not json'")
    db.close()


def bad_checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE checkpoints SET checkpoint = x'c1ff00'")
    db.close()


@pytest.mark.parametrize(
    "which, damage",
    [
        ("run.db", garbage),
        ("run.calls.db", garbage),
        ("run.db", truncated),
        ("run.calls.db", truncated),
        ("run.calls.db", bad_json),
        ("run.db", bad_checkpoint),
    ],
)
async def test_a_damaged_state_file_is_a_user_error_naming_it(
    sim: Any, tmp_path, which: str, damage: Any
) -> None:
    db = tmp_path / "run.db"
    graph = debate(team(sim), rounds=2)
    await run(graph, QUESTION, state_path=db, run_id="r1")
    for wal in tmp_path.glob("*-wal"):  # fold the WAL in, so damage hits the data
        wal.unlink()
    damage(tmp_path / which)
    with pytest.raises(UserError) as caught:
        await run(graph, QUESTION, state_path=db, run_id="r1", resume=True)
    message = str(caught.value)
    assert str(tmp_path / which) in message and "new --state" in message
    assert not list(tmp_path.glob("*.lock"))


# ------------------------------------------------------------------------ the CLI


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "concilium", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def workflow(
    tmp_path: Path, *, rounds: int = 2, kind: str = "debate", latency: float = 0.05
) -> Path:
    text = (ROOT / "examples/debate.yaml").read_text()
    text = text.replace("rounds: 2", f"rounds: {rounds}").replace("kind: debate", f"kind: {kind}")
    text = text.replace("latency: {fixed: 0.05}", f"latency: {{fixed: {latency}}}")
    if kind != "debate":  # self_consistency: one agent, samples instead of rounds
        text = text.replace("agents: [alice, bob, carol]", "agent: alice").replace(
            f"rounds: {rounds}", "samples: 3"
        )
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    return path


def test_cli_refuses_an_edited_workflow_and_resumes_it_with_force(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    common = ["-b", "sim", "-i", QUESTION, "--json", "--state", state, "--run-id", "r"]
    first = cli("run", str(workflow(tmp_path, rounds=2)), *common, "--max-calls", "4")
    assert first.returncode == 1 and "budget exceeded" in first.stderr  # in round 2
    for edited in (workflow(tmp_path, rounds=3), workflow(tmp_path, kind="self_consistency")):
        out = cli("run", str(edited), *common, "--resume")
        assert out.returncode == 2, out.stderr
        assert "cannot resume run 'r': the workflow changed" in out.stderr
        assert "--resume --force" in out.stderr and "Traceback" not in out.stderr
    out = cli("run", str(workflow(tmp_path, rounds=3)), *common, "--resume", "--force")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["details"]["rounds"] == 3
    assert len(json.loads(out.stdout)["transcript"]) == 9
    restarted = cli("run", str(workflow(tmp_path, rounds=3)), *common)
    assert restarted.returncode == 2 and "already exists" in restarted.stderr


def test_cli_force_goes_only_with_resume(tmp_path: Path) -> None:
    out = cli("run", "examples/debate.yaml", "-b", "sim", "-i", QUESTION,
              "--state", str(tmp_path / "s.db"), "--run-id", "r", "--force")  # fmt: skip
    assert out.returncode == 2 and "--force only goes with --resume" in out.stderr


def test_cli_a_damaged_state_file_exits_2_without_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    garbage(state)
    out = cli("run", "examples/debate.yaml", "-b", "sim", "-i", QUESTION,
              "--state", str(state), "--run-id", "r", "--resume")  # fmt: skip
    assert out.returncode == 2
    assert str(state) in out.stderr and "Traceback" not in out.stderr


def recorded_calls(calls_db: Path) -> int:
    try:
        with sqlite3.connect(calls_db) as db:
            return db.execute(
                "SELECT count(*) FROM concilium_calls WHERE digest NOT LIKE 'tool:%'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0  # not created yet


def test_cli_kill_9_then_resume_resends_no_completed_call(tmp_path: Path) -> None:
    """A run killed mid-way leaves its lock file; the lock died with the process, so
    --resume takes it; meanwhile a second process on the run id fails fast."""
    flow = workflow(tmp_path, rounds=10, latency=1.0)  # 30 calls, one second per round
    state = tmp_path / "state.db"
    args = ["run", str(flow), "-b", "sim", "-i", QUESTION, "--json",
            "--state", str(state), "--run-id", "r"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "concilium", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while recorded_calls(tmp_path / "state.calls.db") < 3:  # the first round is done
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        second = cli(*args, "--resume")
        assert proc.poll() is None  # the first still runs: the second failed fast
        assert second.returncode == 2, second.stderr
        assert f"run 'r' is in progress in process {proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    done = recorded_calls(tmp_path / "state.calls.db")
    assert 3 <= done < 30
    assert list(tmp_path.glob("*.lock"))  # stale: its process is gone
    out = cli(*args, "--resume")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["calls"] + done == 30  # every completed call came from the state file
    assert len(result["transcript"]) == 30
    assert not list(tmp_path.glob("*.lock"))
