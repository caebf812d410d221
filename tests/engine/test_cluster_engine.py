"""The cluster launcher with the embedded engine as the replica process: it starts,
answers through the pool config it wrote, and stops."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from concilium.agents import Agent, Capabilities, ModelSpec, aclose
from concilium.serving.cluster import ClusterSpec, launch_cluster


async def test_the_launcher_runs_the_engine_and_writes_a_usable_pool(tmp_path: Path) -> None:
    spec = ClusterSpec.model_validate({"models": [{"name": "gemma-launched", "model": "gemma-3-270m", "server": "engine"}],
                                       "deadline": 300})  # fmt: skip
    async with launch_cluster(
        spec, pool_file=tmp_path / "pool.yaml", log=lambda m: None
    ) as cluster:
        entry = yaml.safe_load((tmp_path / "pool.yaml").read_text())["models"]["gemma-launched"]
        model = ModelSpec(
            entry["model"],
            api_base=entry["api_base"],
            capabilities=Capabilities(**entry["capabilities"]),
        )
        reply = await Agent("probe", model, max_tokens=8, temperature=0.0).run(
            "The capital of France is"
        )
        await aclose()
        pid = cluster.processes[0].pid
    assert reply.usage.completion_tokens > 0 and reply.text
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
