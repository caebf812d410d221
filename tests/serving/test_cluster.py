"""The cluster launcher: the exact vllm serve commands it writes for GPUs, and real
processes (the simulated server as the replica) started, restarted and stopped."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiohttp
import pytest
import yaml

from concilium._errors import ServerError, UserError
from concilium.graphs.workflows import parse_workflow
from concilium.serving._cluster import family_of, plan_replicas, pool_config
from concilium.serving.cluster import ClusterSpec, launch_cluster


def spec(**deployment: object) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {"models": [{"name": "qwen", "model": "Qwen/Qwen3-8B", **deployment}]}
    )


def test_a_four_gpu_box_with_tensor_parallel_two_gets_two_replicas() -> None:
    cluster = spec(gpus=[0, 1, 2, 3], tensor_parallel_size=2, max_model_len=8192,
                   speculative_config={"method": "ngram", "num_speculative_tokens": 4}, extra_args=["--enable-prefix-caching"])  # fmt: skip
    plans = plan_replicas(cluster, ports=iter([8001, 8002]))
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0,1", "2,3"]
    assert plans[0].argv == [
        "vllm", "serve", "Qwen/Qwen3-8B", "--served-model-name", "qwen", "--host", "127.0.0.1", "--port", "8001",
        "--tensor-parallel-size", "2", "--max-model-len", "8192",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--speculative-config", '{"method":"ngram","num_speculative_tokens":4}', "--enable-prefix-caching",
    ]  # fmt: skip
    assert plans[1].argv[plans[1].argv.index("--port") + 1] == "8002"


def test_the_capability_registry_fills_in_each_family() -> None:
    assert family_of("meta-llama/Llama-3.1-8B-Instruct").tool_call_parser == "llama3_json"
    assert not family_of("mistralai/Mistral-7B-Instruct-v0.3").several_system_messages
    assert family_of("some/unknown-model").tool_call_parser is None
    plan = plan_replicas(spec(model="google/gemma-3-27b-it", gpus=[0]), ports=iter([9000]))[0]
    assert "--tool-call-parser" not in plan.argv


def test_gpu_counts_that_do_not_fit_are_refused() -> None:
    with pytest.raises(
        UserError, match="3 GPUs do not split into groups of tensor_parallel_size=2"
    ):
        plan_replicas(spec(gpus=[0, 1, 2], tensor_parallel_size=2))
    with pytest.raises(UserError, match="3 replicas need 6 GPUs, 4 given"):
        plan_replicas(spec(gpus=[0, 1, 2, 3], tensor_parallel_size=2, replicas=3))


def test_the_pool_config_is_a_valid_models_section() -> None:
    cluster = spec(gpus=[0, 1])
    pool = pool_config(cluster, plan_replicas(cluster, ports=iter([8001, 8002])))
    assert pool["models"]["qwen"]["api_base"] == [
        "http://127.0.0.1:8001/v1",
        "http://127.0.0.1:8002/v1",
    ]
    workflow = {
        **pool,
        "name": "w",
        "agents": {"a": {"model": "qwen"}},
        "workflow": {"kind": "self_consistency", "agent": "a"},
    }
    parsed, _, _ = parse_workflow(yaml.safe_dump(workflow), "w.yaml")
    assert parsed.models["qwen"].routing == "affinity" and parsed.models["qwen"].capabilities.tools


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/health") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_replicas_start_a_killed_one_is_restarted_and_stop_ends_them_all(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    cluster = ClusterSpec.model_validate({"models": [{"name": "sim", "model": "sim", "server": "sim", "replicas": 2}],
                                          "deadline": 60, "max_restarts": 1, "router": None, "logs": str(logs)})  # fmt: skip
    log: list[str] = []
    async with launch_cluster(cluster, pool_file=tmp_path / "pool.yaml", log=log.append) as running:
        urls = yaml.safe_load((tmp_path / "pool.yaml").read_text())["models"]["sim"]["api_base"]
        assert len(urls) == 2 and all([await _healthy(u) for u in urls])
        port = int(urls[0].rsplit(":", 1)[1].removesuffix("/v1"))
        assert "listening on" in (logs / f"port-{port}.log").read_text()  # its whole output
        first_pid = running.processes[0].pid
        running.processes[0].kill()
        for _ in range(200):  # restarted on the same port
            await asyncio.sleep(0.1)
            if running.processes[0].pid != first_pid and await _healthy(urls[0]):
                break
        assert running.processes[0].pid != first_pid and running.restarts == [1, 0]
        (died,) = [line for line in log if "died (killed by SIGKILL)" in line]
        assert "restarting it on the same port" in died
        kept = Path(died.rsplit("its log: ", 1)[1])  # the dead replica's log, kept aside
        assert kept.parent == logs and kept.name.startswith(f"port-{port}-died-")
        assert "listening on" in await asyncio.to_thread(kept.read_text)
        second_pid = running.processes[0].pid
        running.processes[0].kill()  # a second death within 10 minutes: over the limit
        for _ in range(200):
            await asyncio.sleep(0.1)
            if any("not restarted" in line for line in log):
                break
        assert running.processes[0].pid == second_pid and running.restarts == [1, 0]
        pids = [p.pid for p in running.processes]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_replica_that_fails_to_start_reports_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "vllm"
    fake.write_text(
        "#!/bin/sh\necho 'INFO starting'\necho 'RuntimeError: No CUDA GPUs are available' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(ServerError, match=r"(?s)exited with code 1.*No CUDA GPUs are available"):
        async with launch_cluster(spec(gpus=[0], port=0), log=lambda m: None):
            pass
