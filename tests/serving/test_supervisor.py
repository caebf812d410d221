"""The embedded engine's supervisor: a replica that dies, or hangs (up, port open, no
answer), is restarted on its port, its log kept, one line said, and the calls in
flight wait for it.

These run without the engine. A fake installation's "python" is a shell script that
runs the simulated server (a test double, not a model) on the port vLLM was given, so
everything else is the real code path: ``concilium eval --backend local``, its
Session, ``local_engine`` and the supervisor under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from concilium._errors import ModelCallError, UserError
from concilium.agents import Agent, aclose
from concilium.serving._supervisor import LIVENESS_VAR, Liveness
from concilium.serving.engine import EngineHome, local_engine

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 12


def fake_engine(root: Path, latency: float = 0.4) -> EngineHome:
    """A complete install (its stamps) whose ``python`` starts the simulated server (a
    test double) on the ``--port`` of the vLLM command, with a child process that
    outlives it, and appends their pids to ``root/pids`` and ``root/children``; while
    ``root/fail-once`` exists, a start fails (and removes it); while ``root/stall-once``
    exists, a start holds every reply for an hour (and removes it): requests run, its
    token count stops, its ``/health`` answers, as when vLLM's engine core stops."""
    home = EngineHome(root)
    home.python.parent.mkdir(parents=True)
    home.python.write_text(
        "#!/bin/sh\n"
        "# a test double for the engine: the simulated server on vLLM's port\n"
        'while [ $# -gt 0 ]; do [ "$1" = --port ] && port=$2; shift; done\n'
        f"echo $$ >> {root / 'pids'}\n"
        f"if [ -e {root / 'fail-once'} ]; then rm {root / 'fail-once'}; echo 'out of memory'; exit 3; fi\n"
        "# like vLLM's engine core: a child that holds the output open when the server dies\n"
        f"sleep 600 & echo $! >> {root / 'children'}\n"
        f"lat={latency}; if [ -e {root / 'stall-once'} ]; then rm {root / 'stall-once'}; lat=3600; fi\n"
        f'exec {sys.executable} -P -m concilium serve sim --port "$port" --latency "$lat"\n'
    )
    home.python.chmod(home.python.stat().st_mode | stat.S_IEXEC)
    home.stamp_environment()
    home.model_dir.mkdir()
    home.stamp_model()
    return home


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _alive(pid: str) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(int(pid), 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _still_running(pids: list[str], seconds: float = 15) -> list[str]:
    """The ``pids`` still running after up to ``seconds``: a signalled process ends a
    moment after the command that signalled it has exited, later on a loaded machine."""
    deadline = time.monotonic() + seconds
    while (left := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _wait_for(what: str, check: object, proc: subprocess.Popen[str], seconds: float = 120) -> None:
    stop_at = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"eval ended before {what}: {proc.communicate()}"
        assert time.monotonic() < stop_at, f"no {what} within {seconds} s"
        time.sleep(0.05)


def test_an_eval_whose_engine_is_killed_finishes_every_row_after_one_restart(
    tmp_path: Path,
) -> None:
    fake_engine(tmp_path / "engine")
    data = tmp_path / "data.jsonl"
    with (ROOT / "examples/data/capitals.jsonl").open() as source:
        data.write_text("".join(next(source) for _ in range(ITEMS)))
    out = tmp_path / "out"
    args = [sys.executable, "-P", "-m", "concilium", "eval", str(data), "examples/base_single.yaml",
            "--backend", "local", "--out", str(out), "--concurrency", "4", "--json"]  # fmt: skip
    env = {**os.environ, "CONCILIUM_ENGINE_HOME": str(tmp_path / "engine")}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        pids = tmp_path / "engine" / "pids"
        _wait_for("a finished row", lambda: _lines(out / "results.jsonl"), proc)
        first = int(_lines(pids)[0])
        os.kill(first, signal.SIGKILL)  # the engine dies with calls in flight
        done_at_kill = len(_lines(out / "results.jsonl"))
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        engine = tmp_path / "engine"
        left = _still_running(_lines(engine / "pids") + _lines(engine / "children"))
        for pid in left:
            os.kill(int(pid), signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert done_at_kill < ITEMS  # killed mid-eval
    rows = [json.loads(line) for line in _lines(out / "results.jsonl")]
    assert len(rows) == ITEMS and not [r for r in rows if r["failed"] or r["answer"] is None]
    assert json.loads(stdout)["methods"][0]["failed"] == 0
    # one line says what happened and where the dead engine's log is
    said = [line for line in stderr.splitlines() if "died" in line]
    assert len(said) == 1, stderr
    assert "killed by SIGKILL" in said[0] and "restarting it on the same port" in said[0]
    kept = Path(re.search(r"its log: (\S+)", said[0]).group(1))  # type: ignore[union-attr]
    assert kept.name.startswith("port-") and f"pid{first}" in kept.name
    assert "answers are simulated" in kept.read_text()  # the dead server's own output
    assert len(_lines(pids)) == 2  # one start, one restart
    fresh = kept.with_name(kept.name.split("-died-")[0] + ".log")
    assert fresh != kept and "answers are simulated" in fresh.read_text()
    assert "Traceback" not in stderr
    assert not left  # the dead server's child was ended, the rest stopped at the end


async def test_a_failed_restart_is_tried_again_and_a_replica_that_keeps_dying_is_given_up(
    tmp_path: Path,
) -> None:
    home = fake_engine(tmp_path / "engine", latency=0.0)
    said: list[str] = []
    async with local_engine(home=home, deadline=60, max_restarts=2, notice=said.append) as engine:
        agent = Agent("a", engine.spec(timeout=30), max_tokens=8)
        (tmp_path / "engine" / "fail-once").touch()  # the first restart fails
        engine.processes[0].kill()
        assert (await agent.run("What is 6 * 7?")).text  # waited for the second restart
        engine.processes[0].kill()
        with pytest.raises(ModelCallError, match="is the server running"):
            await agent.run("What is 6 * 7?")
        await aclose()
    assert len(said) == 3, said
    assert "died (killed by SIGKILL); restarting it on the same port" in said[0]
    assert "did not start (exited with code 3 while starting); restarting it" in said[1]
    failed_log = Path(said[1].rsplit("its log: ", 1)[1])
    assert "out of memory" in _lines(failed_log)  # the failed start's log is kept too
    assert "not restarted" in said[2] and "2 time(s) within 600 s" in said[2]
    assert len(_lines(tmp_path / "engine" / "pids")) == 3


def test_serve_local_restarts_a_killed_engine_at_the_url_it_printed(tmp_path: Path) -> None:
    fake_engine(tmp_path / "engine")
    args = [sys.executable, "-P", "-m", "concilium", "serve", "local", "--port", "0"]
    env = {**os.environ, "CONCILIUM_ENGINE_HOME": str(tmp_path / "engine")}
    err = tmp_path / "stderr"
    with err.open("w") as sink:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=sink)  # fmt: skip
    assert proc.stdout is not None
    try:
        url = next(line.split("api_base ")[1].strip() for line in proc.stdout if "api_base" in line)
        pids = tmp_path / "engine" / "pids"
        os.kill(int(_lines(pids)[0]), signal.SIGKILL)
        _wait_for("a restarted engine", lambda: len(_lines(pids)) == 2 and _health(url), proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = _lines(err)
    assert proc.returncode == 0 and len(said) == 1, said
    assert "died (killed by SIGKILL); restarting it on the same port" in said[0]
    assert not _still_running(_lines(pids))


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


async def test_a_hung_engine_is_killed_and_restarted_and_the_call_it_hung_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # probe every 0.2 s, 0.5 s to answer, 3 misses in a row: tuned through the variable
    monkeypatch.setenv(LIVENESS_VAR, "0.2,0.5,3")
    home = fake_engine(tmp_path / "engine", latency=0.0)
    said: list[str] = []
    async with local_engine(home=home, deadline=60, notice=said.append) as engine:
        agent = Agent("a", engine.spec(timeout=30), max_tokens=8)
        assert (await agent.run("What is 6 * 7?")).text
        hung = engine.processes[0].pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # up, its port open, answering nothing
        try:
            reply = await agent.run("What is 7 * 8?")  # sent to the hung server first
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGCONT)
        assert reply.text and engine.processes[0].pid != hung
        await aclose()
    port = engine.urls[0].split(":")[-1].removesuffix("/v1")
    assert len(said) == 1, said
    assert said[0].startswith(
        f"embedded engine replica 0 (port {port}, cores 0-1) hung: http://127.0.0.1:{port}/health "
        "gave no answer to 3 probes in a row (0.5 s each, every 0.2 s), so it was killed "
        "(SIGKILL to its process group); restarting it on the same port, calls wait for it; "
    ), said
    kept = Path(said[0].rsplit("its log: ", 1)[1])
    assert kept.name.startswith(f"port-{port}-hung-") and kept.name.endswith(f"-pid{hung}.log")
    assert any("answers are simulated" in line for line in _lines(kept))  # the hung one's log
    engine_dir = tmp_path / "engine"
    assert [int(pid) for pid in _lines(engine_dir / "pids")] == [hung, engine.processes[0].pid]
    assert not _still_running(_lines(engine_dir / "pids") + _lines(engine_dir / "children"))


async def test_an_engine_whose_requests_stop_counting_tokens_is_restarted_and_the_call_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its /health answers all along; requests running and no token counted for 1 s
    monkeypatch.setenv(LIVENESS_VAR, "0.2,0.5,3,1")
    engine_dir = tmp_path / "engine"
    home = fake_engine(engine_dir, latency=0.0)
    (engine_dir / "stall-once").touch()
    said: list[str] = []
    async with local_engine(home=home, deadline=60, notice=said.append) as engine:
        stalled = engine.processes[0].pid
        agent = Agent("a", engine.spec(timeout=60), max_tokens=8)
        reply = await agent.run("What is 7 * 8?")  # held by the stalled server, then retried
        assert reply.text and engine.processes[0].pid != stalled
        await aclose()
    port = engine.urls[0].split(":")[-1].removesuffix("/v1")
    assert len(said) == 1, said
    assert re.match(
        rf"embedded engine replica 0 \(port {port}, cores 0-1\) stalled: 1 request\(s\) running or "
        rf"waiting and no token counted for \d+ s \(http://127\.0\.0\.1:{port}/metrics; its /health still "
        r"answered\), so it was killed \(SIGKILL to its process group\); restarting it on the same "
        r"port, calls wait for it; its log: ",
        said[0],
    ), said
    kept = Path(said[0].rsplit("its log: ", 1)[1])
    assert kept.name.startswith(f"port-{port}-hung-") and kept.name.endswith(f"-pid{stalled}.log")
    assert [int(pid) for pid in _lines(engine_dir / "pids")] == [stalled, engine.processes[0].pid]


async def test_a_slow_engine_that_answers_its_probe_is_not_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each reply takes 1.5 s, three times the probe's timeout: busy is not hung
    monkeypatch.setenv(LIVENESS_VAR, "0.2,0.5,3")
    home = fake_engine(tmp_path / "engine", latency=1.5)
    said: list[str] = []
    async with local_engine(home=home, deadline=60, notice=said.append) as engine:
        agent = Agent("a", engine.spec(timeout=30), max_tokens=8)
        replies = [await agent.run(f"What is {i} * 7?") for i in range(2)]
        await aclose()
    assert all(reply.text for reply in replies)
    assert said == [] and len(_lines(tmp_path / "engine" / "pids")) == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("5,5", "is not three or four numbers"),
        ("five,5,3", "is not three or four numbers"),
        ("5,5,2.5", "is not three or four numbers"),
        ("5,5,3,60,1", "is not three or four numbers"),
        ("5,5,3,-1", "STALL must be 0 (off) or more seconds"),
        ("5,5,3,inf", "STALL must be 0 (off) or more seconds"),
        ("0,5,3", "INTERVAL must be above 0 seconds"),
        ("5,nan,3", "TIMEOUT must be above 0 seconds"),
        ("5,5,0", "FAILURES must be 1 or more"),
    ],
)
def test_a_liveness_setting_it_cannot_honour_is_refused_with_the_fix(text: str, why: str) -> None:
    with pytest.raises(UserError) as info:
        Liveness.from_env({LIVENESS_VAR: text})
    message = str(info.value)
    assert message.startswith(f"{LIVENESS_VAR}={text!r}") and why in message
    assert "INTERVAL,TIMEOUT,FAILURES[,STALL]" in message and "default 5,5,3,120" in message


def test_the_liveness_setting_is_read_from_the_variable_or_defaults() -> None:
    assert Liveness.from_env({}) == Liveness(5.0, 5.0, 3, 120.0)
    assert Liveness.from_env({LIVENESS_VAR: " 10, 2.5 ,4 "}) == Liveness(10.0, 2.5, 4, 120.0)
    assert Liveness.from_env({LIVENESS_VAR: "10,2.5,4, 0"}) == Liveness(10.0, 2.5, 4, 0.0)
    assert not Liveness.from_env({LIVENESS_VAR: "OFF"}).enabled


async def test_calls_that_poke_the_probe_at_once_cannot_make_a_hang_verdict_sooner() -> None:
    """Every failing call asks the supervisor at once (a poke, an immediate probe). A
    replica whose port refuses, as a dying one's does, used to collect its three misses
    from such pokes within milliseconds, and was called hung before its exit was seen.
    A miss now counts once per interval: the verdict takes the probes' time."""
    from concilium.agents import ModelSpec
    from concilium.serving import ManagedProcess
    from concilium.serving._engine import free_port
    from concilium.serving._supervisor import Supervisor

    closed = free_port()  # nothing listens there: every probe is refused at once
    url = f"http://127.0.0.1:{closed}/v1"

    def replica(_: int) -> ManagedProcess:
        return ManagedProcess("silent replica", ["sleep", "600"], deadline=30)

    proc = await replica(0).start()
    proc.health_url = f"http://127.0.0.1:{closed}/health"  # probed from now on
    said: list[str] = []
    live = Liveness(interval=1.0, timeout=0.5, failures=3)
    supervisor = Supervisor([proc], replica, [url], max_restarts=0, notice=said.append, liveness=live)  # fmt: skip
    async with supervisor:
        started = time.monotonic()
        agent = Agent("a", ModelSpec("hosted_vllm/m", api_base=url), max_tokens=4)
        for _ in range(10):  # ten calls refused at once, each asking for a verdict
            with contextlib.suppress(TimeoutError, ModelCallError):
                await asyncio.wait_for(agent.run("What is 2 + 2?"), 0.05)
        assert said == [] and proc.returncode is None  # ten refused probes, one miss
        while not said:
            assert time.monotonic() - started < 60, "no verdict on a replica that never answers"
            await asyncio.sleep(0.05)
        waited = time.monotonic() - started
    await proc.stop()
    await aclose()
    assert said[0].startswith("silent replica hung: ") and "3 probes in a row" in said[0]
    assert waited >= 2 * live.interval  # three misses, an interval apart at the least


async def test_a_call_on_another_event_loop_gets_its_retries_not_the_supervisors_wait() -> None:
    """The supervisor's events and probe session belong to the loop it runs on. A call
    made on another loop (a thread with a loop of its own) that fails at a supervised
    URL gets its retries and the connection error, not a RuntimeError from the
    supervisor's session used off its loop."""
    from concilium.agents import ModelSpec
    from concilium.serving import ManagedProcess
    from concilium.serving._engine import free_port
    from concilium.serving._supervisor import Supervisor

    closed = free_port()
    url = f"http://127.0.0.1:{closed}/v1"

    def replica(_: int) -> ManagedProcess:
        return ManagedProcess("silent replica", ["sleep", "600"], deadline=30)

    proc = await replica(0).start()
    proc.health_url = f"http://127.0.0.1:{closed}/health"
    said: list[str] = []
    live = Liveness(interval=60.0, timeout=0.5, failures=3)  # no verdict while it runs
    supervisor = Supervisor([proc], replica, [url], max_restarts=0, notice=said.append, liveness=live)  # fmt: skip

    def elsewhere() -> BaseException | None:
        async def call() -> None:
            try:
                await Agent("a", ModelSpec("hosted_vllm/m", api_base=url), max_tokens=4).run("2+2?")
            finally:
                await aclose()

        try:
            asyncio.run(call())
        except BaseException as exc:  # the test looks at what it was
            return exc
        return None

    async with supervisor:
        raised = await asyncio.to_thread(elsewhere)
    await proc.stop()
    assert isinstance(raised, ModelCallError), repr(raised)
    assert "is the server running?" in str(raised) and "4 attempts" in str(raised)
    assert said == []
