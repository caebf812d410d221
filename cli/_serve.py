"""``concilium serve sim | local | api | vllm | mcp``: servers that run until Ctrl-C.

``serve api`` builds each workflow once, binds it to ``--backend`` through one
``concilium.app.Session`` (which owns the engine or simulated servers) and serves it
as an OpenAI-compatible model; ``--ui`` adds the web UI on the same session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    api_key_option,
    backend_option,
    echo_err,
    guard,
    listen_options,
    load_named,
    otlp_option,
    tracing,
    until_signal,
)
from ._mcp import serve_mcp

if TYPE_CHECKING:
    from concilium.app import Backend

__all__ = ["serve"]


def router_options(f: Any) -> Any:
    """``--router-policy`` and ``--no-router`` (docs/serving.md, "Routers")."""
    policy = click.option(
        "--router-policy",
        type=click.Choice(["cache_aware", "consistent_hash", "power_of_two", "round_robin"]),
        default="cache_aware",
        show_default=True,
        help="vllm-router's policy in front of several replicas.",
    )
    off = click.option(
        "--no-router",
        is_flag=True,
        help="No router: every replica's URL, routed by the client (several hosts).",
    )
    return policy(off(f))


@click.group()
def serve() -> None:
    """Start servers: the simulated one (a test double), the embedded engine, workflows."""


@serve.command("sim")
@listen_options(8000, "Loopback address to bind.")
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
@guard()
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
    from concilium.agents.sim import SimConfig
    from concilium.serving import serve_forever

    raw: dict[str, Any] = {}
    try:
        if config_file:  # bounded like a workflow file: a FIFO or an alias bomb is an error
            from concilium.graphs.workflows import load_yaml, read_workflow_text  # ~1 s import

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
@router_options
@guard()
def serve_local(
    replicas: int, port: int, deadline: float, router_policy: str, no_router: bool
) -> None:
    """Run the embedded engine (vLLM CPU build, Gemma 3 270M base) until Ctrl-C.

    With several replicas, vllm-router runs in front of them and its one URL is the
    api_base (--no-router prints every replica's URL for client-side routing)."""
    from concilium.serving.cluster import ROUTED_REPLICA_ARGS, router_binary, run_router
    from concilium.serving.engine import ENGINE_MODEL, local_engine

    routed = not no_router and replicas > 1
    if routed:
        router_binary()  # not installed: say so before starting the engine

    async def go() -> None:
        async with contextlib.AsyncExitStack() as stack:
            extra = ROUTED_REPLICA_ARGS if routed else ()  # cache_aware needs them
            start = local_engine(
                replicas, port=port, deadline=deadline, log=click.echo, extra_args=extra
            )
            engine = await stack.enter_async_context(start)
            urls = engine.urls
            if routed:
                router = await stack.enter_async_context(
                    run_router(engine.urls, policy=router_policy, log=click.echo)
                )
                urls = [router.url]
            click.echo(f"model {ENGINE_MODEL!r}, api_base {' '.join(urls)}")
            click.echo("press Ctrl-C to stop")
            await until_signal()

    asyncio.run(go())


@serve.command("api")
@click.argument("workflows", nargs=-1, required=True, metavar="WORKFLOW...")
@backend_option
@listen_options(8080)
@api_key_option
@click.option("--max-body", default=1024 * 1024, show_default=True, type=click.IntRange(min=1024), help="Largest request body in bytes (413 beyond).")  # fmt: skip
@otlp_option
@click.option("--ui", "with_ui", is_flag=True, help="Also serve the web UI at /ui/.")
@guard()
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
    """Serve WORKFLOWS (YAML files or app.py:graph) as OpenAI-compatible models."""
    with tracing(otlp_endpoint):
        asyncio.run(_serve_api(workflows, backend, host, port, api_key, max_body, with_ui))


async def _serve_api(
    targets: tuple[str, ...],
    backend: Backend,
    host: str,
    port: int,
    api_key: str | None,
    max_body: int,
    with_ui: bool = False,
) -> None:
    from concilium.app import Listener, Session
    from concilium.serving import create_app

    workflows = load_named(targets)
    listener = Listener.bind(host, port, api_key=api_key)
    async with Session(backend, log=echo_err) as session:
        bound = {wf.name: await session.bind(wf) for wf in workflows}
        app = create_app(bound, api_key=api_key, bind=listener.address, max_body=max_body)
        if with_ui:  # the UI's runs go to the same session: one engine, not a second
            from concilium.ui import add_ui

            add_ui(app, session=session, workflow_dirs=targets, prefix="/ui", api_key=api_key)
        if backend.notice:
            click.echo(backend.notice, err=True)
        ready = f"serving {sorted(bound)} at {listener.url('/v1')}"
        await listener.serve(app, ready=ready, say=echo_err)


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
@router_options
@guard()
def serve_vllm(
    config_file: str | None, model: str | None, name: str | None, gpus: str, **options: Any
) -> None:
    """Start a local cluster of vLLM servers, one per GPU group, until Ctrl-C.

    A model with several replicas gets vllm-router in front of them; the pool file
    holds its one URL (--no-router: every replica's, routed by the client)."""
    from concilium._errors import UserError
    from concilium.serving.cluster import ClusterSpec, launch_cluster, load_cluster_spec

    pool_file, deadline = options.pop("pool_file"), options.pop("deadline")
    router_policy, no_router = options.pop("router_policy"), options.pop("no_router")
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
    if no_router:
        spec.router = None
    elif not config_file or router_policy != "cache_aware":  # else the file's router:
        spec.router = router_policy

    async def go() -> None:
        async with launch_cluster(spec, pool_file=pool_file, log=lambda m: click.echo(m, err=True)):
            click.echo("cluster ready; press Ctrl-C to stop", err=True)
            await until_signal()

    asyncio.run(go())


serve.add_command(serve_mcp)
