"""The benchmarks run end to end and write their figures as JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "concilium", "bench", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip


def test_bench_patterns_reports_moa_and_adaptive_figures(tmp_path: Path) -> None:
    out = bench(
        "patterns",
        "--latency",
        "0.05",
        "--repeats",
        "1",
        "--fixed-n",
        "8",
        "--deepconf-questions",
        "2",
        "--deepconf-budget",
        "24",
        "--json",
        str(tmp_path / "p.json"),
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "p.json").read_text())
    assert figures["mixture_of_agents"]["calls"] == 13  # 3 layers x 4 proposers + the aggregator
    assert all(1 <= row["adaptive_mean_samples"] <= 8 for row in figures["adaptive_consistency"])
    deepconf = {row["method"].split(" (")[0]: row for row in figures["deepconf"]}
    assert set(deepconf) == {"majority", "DeepConf offline", "DeepConf online"}
    assert all(row["budget"] == 24 and row["tokens"] > 0 for row in deepconf.values())
    assert deepconf["DeepConf online"]["mean_traces"] <= 24
    assert (
        "| concilium (layers concurrent) |" in out.stdout
        and json.loads(out.stdout.strip().splitlines()[-1]) == figures
    )


def test_bench_fanout_writes_its_table_and_json(tmp_path: Path) -> None:
    out = bench(
        "fanout",
        "--sizes",
        "1,4",
        "--repeats",
        "1",
        "--latency",
        "0.01",
        "--json",
        str(tmp_path / "f.json"),
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "f.json").read_text())
    assert json.loads(out.stdout.strip().splitlines()[-1]) == figures


def test_bench_dag_reports_every_shape(tmp_path: Path) -> None:
    out = bench("dag", "--repeats", "1", "--json", str(tmp_path / "d.json"))
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "d.json").read_text())
    assert sorted(figures) == ["deep", "fan_in_8", "unbalanced", "wide"]
    for f in figures.values():
        assert {
            "event_driven_over_cp",
            "superstep_over_cp",
            "speedup_over_react",
            "line_to_start_max_ms",
        } <= set(f)


def test_bench_cluster_reports_throughput_ratios_and_hit_rates(tmp_path: Path) -> None:
    """Small sizes (the defaults are the measurement): one fan-out of 4 on 4 simulated
    replicas, whose 34-word prompt is 2 full 16-word cache blocks. Kept on one replica
    (client affinity, consistent_hash on its key) the first request misses both blocks
    and the other 3 hit both: 6 of 8 blocks, 0.75; spread one request per replica
    (round robin) nothing hits: 0.0. The engine rows are skipped (tests/engine covers them)."""
    out = bench("cluster", "--requests", "32", "--questions", "1", "--samples", "4",
                "--router-replicas", "4", "--engine-questions", "0", "--json", str(tmp_path / "c.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "c.json").read_text())
    assert [r["replicas"] for r in figures["throughput"]] == [1, 2, 4]
    assert sorted(figures["prefix_cache"]) == ["affinity", "round_robin"]
    assert figures["prefix_cache"]["affinity"]["hit_rate"] == 0.75
    assert sorted(figures["prefix_cache"]["affinity"]["requests_per_replica"]) == [0, 0, 0, 4]
    assert figures["prefix_cache"]["round_robin"] == {**figures["prefix_cache"]["round_robin"],
                                                      "hit_rate": 0.0, "requests_per_replica": [1, 1, 1, 1]}  # fmt: skip
    routers = figures["routers"]
    if isinstance(routers, str):  # vllm-router not installed: said, not hidden
        assert routers.startswith("router modes skipped") and routers in out.stdout
    else:
        modes = {r["mode"]: r for r in routers}
        assert [r["replicas"] for r in routers] == [4] * 4
        assert list(modes) == ["client affinity", "router cache_aware", "router consistent_hash", "router round_robin"]  # fmt: skip
        assert all(sum(r["requests_per_replica"]) == 4 for r in routers)
        assert modes["client affinity"]["hit_rate"] == modes["router consistent_hash"]["hit_rate"] == 0.75  # fmt: skip
        assert modes["router round_robin"]["hit_rate"] == 0.0
        assert sorted(modes["router consistent_hash"]["requests_per_replica"]) == [0, 0, 0, 4]
    assert figures["engine"] == "engine rows skipped: --engine-questions 0"
    assert "engine rows skipped: --engine-questions 0" in out.stdout


def test_bench_eval_runs_all_three_modes(tmp_path: Path) -> None:
    out = bench("eval", "--items", "12", "--json", str(tmp_path / "e.json"))
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "e.json").read_text())
    assert json.loads(out.stdout.strip().splitlines()[-1]) == figures
    modes = {row["mode"]: row for row in figures["modes"]}
    assert list(modes) == ["runner", "sequential", "all_at_once"]
    assert all(row["items"] == 12 and row["failed"] == 0 for row in modes.values())
    assert all(row["requests"] == 4 * row["items"] for row in modes.values())  # 4 samples each
    assert modes["sequential"]["max_in_flight"] <= 4 < modes["all_at_once"]["max_in_flight"]
    assert "| runner |" in out.stdout and "| all_at_once |" in out.stdout


def test_demo_compares_one_sample_with_nine_and_times_each_way_of_drawing_them(
    tmp_path: Path,
) -> None:
    """On the simulated server (a test double): the structure and order of what the
    demo prints and records, not its speed."""
    import json

    from click.testing import CliRunner

    from concilium.cli import main

    figures = tmp_path / "demo.json"
    args = ["demo", "--backend", "sim", "--items", "4", "--repeats", "1",
            "--out", str(tmp_path / "out"), "--json", str(figures)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "simulated server -- a test double" in result.output
    shown = json.loads(figures.read_text())
    assert [m["method"] for m in shown["methods"]] == [
        "base_sample",
        "base_single",
        "base_self_consistency",
    ]
    assert [len(m["majority_at_k"]) for m in shown["methods"]] == [0, 0, 9]
    assert [(t["mode"], t["requests"]) for t in shown["times"]] == [
        ("one request, 1 sample", 1), ("one request, n=9", 1),
        ("9 requests at once", 9), ("9 requests in sequence", 9),
    ]  # fmt: skip
    assert shown["times"][0]["vs_one_request"] == 1.0
    assert "how the samples are drawn" in result.output and "majority@k" in result.output


def test_bench_faults_through_vllm_router_completes_with_a_replica_killed_or_answering_503() -> (
    None
):
    """Two simulated replicas (test doubles) behind vllm-router, 4 debates of 9 calls:
    every run completes; with one replica answering 503, each 503 is one retry of
    concilium's and every request the replicas counted is one attempt (calls + retries):
    the router adds none."""
    import pytest

    from concilium.bench import faults
    from concilium.serving.cluster import router_binary

    try:
        router_binary()
    except Exception:
        pytest.skip("vllm-router is not installed (the router extra)")
    routed = faults.router_drills(4, latency=0.02)  # faults.main's other drills: test_resilience
    assert not isinstance(routed, str)
    killed, sick = routed
    assert [r["fault"] for r in routed] == ["replica killed mid-eval", "replica answering 503"]
    for r in routed:
        assert r["completed"] == 4 and not r["failures"] and r["calls"] == 36, r
    assert sick["errors_per_replica"] == [sick["retries"], 0]
    assert sum(sick["requests_per_replica"]) == sick["calls"] + sick["retries"]
    assert sick["answers"] == sick["calls"]  # no call answered twice
    # the live replica answered at most every attempt once
    assert killed["requests_per_replica"][1] <= killed["calls"] + killed["retries"]
