"""``concilium bench ...``: benchmarks that print ratios measured side by side in one run."""

from __future__ import annotations

import click

from ._common import guard, json_file_option, repeats_option

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Benchmarks that print ratios measured side by side in one run."""


@bench.command("fanout")
@json_file_option
@click.option(
    "--sizes",
    default="1,4,16,64,256,512",
    show_default=True,
    help="Fan-out widths (512: DeepConf's trace budget).",
)
@click.option("--latency", default=0.2, show_default=True, type=float, help="Server latency (s).")
@repeats_option
@guard()
def bench_fanout(json_file: str | None, sizes: str, latency: float, repeats: int) -> None:
    """Wall time of N concurrent agent calls: concilium vs raw aiohttp, litellm, LangGraph, a loop."""
    from concilium.bench import fanout

    try:
        widths = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{sizes!r} is not a comma-separated list of integers", param_hint="--sizes"
        ) from None
    fanout.main(widths, latency=latency, repeats=repeats, json_file=json_file)


@bench.command("patterns")
@json_file_option
@click.option(
    "--latency",
    default=0.2,
    show_default=True,
    type=float,
    help="Server latency (s) for the MoA run.",
)
@repeats_option
@click.option(
    "--fixed-n",
    default=40,
    show_default=True,
    type=click.IntRange(min=1),
    help="Self-consistency's N.",
)
@click.option(
    "--deepconf-questions",
    default=40,
    show_default=True,
    type=click.IntRange(min=0),
    help="Questions for DeepConf online vs offline vs majority (0 skips it).",
)
@click.option(
    "--deepconf-budget",
    default=64,
    show_default=True,
    type=click.IntRange(min=16),
    help="Traces per question for each of the three (the same budget).",
)
@guard()
def bench_patterns(
    json_file: str | None,
    latency: float,
    repeats: int,
    fixed_n: int,
    deepconf_questions: int,
    deepconf_budget: int,
) -> None:
    """MoA layers vs a sequential loop; adaptive vs fixed-N; DeepConf online vs offline vs majority."""
    from concilium.bench import patterns

    patterns.main(
        latency=latency, repeats=repeats, fixed_n=fixed_n, deepconf_questions=deepconf_questions,
        deepconf_budget=deepconf_budget, json_file=json_file,
    )  # fmt: skip


@bench.command("dag")
@json_file_option
@repeats_option
@guard()
def bench_dag(json_file: str | None, repeats: int) -> None:
    """The DAG executor vs a superstep executor and ReAct, on four DAG shapes."""
    from concilium.bench import dag

    dag.main(repeats=repeats, json_file=json_file)


@bench.command(
    "cluster",
    short_help="Replicas and routers: throughput, cache hits, TTFT.",
)
@json_file_option
@click.option(
    "--requests",
    default=512,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests per run.",
)
@click.option("--questions", default=16, show_default=True, type=click.IntRange(min=1), help="Fan-outs on the simulated replicas.")  # fmt: skip
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=1), help="Branches of each fan-out.")  # fmt: skip
@click.option("--router-replicas", default="4,8", show_default=True, help="Simulated replica counts behind vllm-router (comma-separated; empty skips).")  # fmt: skip
@click.option("--engine-questions", default=16, show_default=True, type=click.IntRange(min=0), help="Few-shot fan-outs on 2 embedded-engine replicas (0 skips the engine rows).")  # fmt: skip
@click.option("--engine-samples", default=4, show_default=True, type=click.IntRange(min=1), help="Branches of each engine fan-out.")  # fmt: skip
@guard()
def bench_cluster(
    json_file: str | None,
    requests: int,
    questions: int,
    samples: int,
    router_replicas: str,
    engine_questions: int,
    engine_samples: int,
) -> None:
    """Throughput of 1, 2, 4 replicas; prefix-cache hits with client-side affinity vs
    vllm-router's policies, on simulated replicas and on 2 embedded-engine replicas
    (hit rate from vLLM's own /metrics, throughput, time to first token)."""
    from concilium.bench import cluster

    try:
        counts = [int(s) for s in router_replicas.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{router_replicas!r} is not a comma-separated list of integers",
            param_hint="--router-replicas",
        ) from None
    if any(k < 1 for k in counts):
        raise click.BadParameter(f"{router_replicas!r}: replica counts start at 1", param_hint="--router-replicas")  # fmt: skip
    cluster.main(
        requests=requests, questions=questions, samples=samples, router_replicas=counts,
        engine_questions=engine_questions, engine_samples=engine_samples, json_file=json_file,
    )  # fmt: skip


@bench.command(
    "faults",
    short_help="Runs under 503s, 429s, hangs; through vllm-router.",
)
@json_file_option
@click.option(
    "--runs", default=100, show_default=True, type=click.IntRange(min=1), help="Debates to run."
)
@click.option(
    "--latency",
    default=0.2,
    show_default=True,
    type=click.FloatRange(min=0.001, max=60),
    help="Server latency (s).",
)
@click.option("--router-runs", default=20, show_default=True, type=click.IntRange(min=0), help="Debates through vllm-router with a replica killed, then one answering 503 (0 skips).")  # fmt: skip
@guard()
def bench_faults(json_file: str | None, runs: int, latency: float, router_runs: int) -> None:
    """Runs completed, requests over the minimum and the slowest run under 503s, 429s and hangs,
    at the default timeouts beside a timeout tuned to the latency; then through vllm-router
    with a replica killed mid-eval and one answering 503."""
    from concilium.bench import faults

    faults.main(runs=runs, latency=latency, router_runs=router_runs, json_file=json_file)


@bench.command("eval")
@json_file_option
@click.option(
    "--items", default=200, show_default=True, type=click.IntRange(min=1), help="Items to evaluate."
)
@guard()
def bench_eval(json_file: str | None, items: int) -> None:
    """Items/s of concilium eval as a fraction of a capacity-limited server's, vs a loop and all at once."""
    from concilium.bench import eval as eval_bench

    eval_bench.main(items=items, json_file=json_file)


@bench.command("research")
@json_file_option
@click.option("--backend", "-b", default="sim", show_default=True, help="sim (simulated server), local (embedded engine), or a URL.")  # fmt: skip
@click.option(
    "--questions",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Questions to ask.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="The synthetic corpus's seed.")
@click.option("--workflow", type=click.Path(dir_okay=False), help="A research workflow file (default: examples/research_assistant.yaml; examples/base_research.yaml for a base model).")  # fmt: skip
@guard()
def bench_research(json_file: str | None, backend: str, questions: int, seed: int, workflow: str | None) -> None:  # fmt: skip
    """The research assistant vs one retrieval + one answer: recall, citations, calls, tokens."""
    from concilium.bench import research

    research.main(backend=backend, questions=questions, seed=seed, json_file=json_file, workflow=workflow)  # fmt: skip


@bench.command("overlap")
@json_file_option
@click.option("--tasks", default=5, show_default=True, type=click.IntRange(min=1), help="Runs of the task per mode.")  # fmt: skip
@click.option("--tool-latency", default=0.3, show_default=True, type=click.FloatRange(min=0, max=60), help="The tool's latency (s).")  # fmt: skip
@click.option("--per-token", default=0.01, show_default=True, type=click.FloatRange(min=0, max=1), help="Streaming latency per token (s).")  # fmt: skip
@click.option("--tokens", default=40, show_default=True, type=click.IntRange(min=0, max=2000), help="Tokens decoded after the call.")  # fmt: skip
@guard()
def bench_overlap(json_file: str | None, tasks: int, tool_latency: float, per_token: float, tokens: int) -> None:  # fmt: skip
    """Overlapped tool calls vs run-then-resume on the simulated server: wall time, overlap."""
    from concilium.bench import overlap

    overlap.main(tasks=tasks, tool_latency=tool_latency, per_token=per_token, tokens=tokens, json_file=json_file)  # fmt: skip


@bench.command("mcp-start")
@json_file_option
@repeats_option
@guard()
def bench_mcp_start(json_file: str | None, repeats: int) -> None:
    """How soon serve mcp over stdio answers the handshake, lists its tools and answers a call."""
    from concilium.bench import mcp_start

    mcp_start.main(repeats=repeats, json_file=json_file)
